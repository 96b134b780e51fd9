#!/usr/bin/env bash
# Creates (once) the Python venv used by the peer checks in tests/peer/: Debian's python3-torch
# (via --system-site-packages) plus pinned ecosystem packages from PyPI. Kept in the user cache,
# keyed by the requirements file, so fresh clones on the same machine reuse it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
req="$here/requirements.txt"
nodeps="$here/requirements-nodeps.txt"
[[ -f "$req" ]] || { echo "[peer] no requirements.txt, nothing to do"; exit 0; }
key=$(cat "$req" "$nodeps" 2>/dev/null | sha256sum | cut -c1-12)
venv="${LLMOPT_PEER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/llmopt/peer-venv-$key}"
# One builder at a time (two shells running this at once would delete each other's venv).
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [[ ! -f "$venv/.complete" ]]; then
  rm -rf "$venv"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  # llama-cpp-python compiles llama.cpp from its sdist (pip then caches the wheel in ~/.cache/pip).
  # Portable CPU build only: no -march=native (the wheel is cached across machines), no OpenMP or
  # BLAS, no multimodal/tools/examples/tests, so the build is small and needs only cmake + gcc.
  export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DGGML_BLAS=OFF \
-DGGML_CCACHE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF}"
  export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
  # pip must never replace Debian's torch with PyPI's (a package asking for a newer torch fails
  # the install instead): the torch the venv sees is pinned as a constraint.
  torch_ver=$("$venv/bin/python" -c 'import torch; print(torch.__version__)')
  echo "torch==$torch_ver" > "$venv/constraints.txt"
  "$venv/bin/pip" install -q --disable-pip-version-check -c "$venv/constraints.txt" -r "$req"
  # Packages whose metadata wants torch>=1.13.0 final (Debian's is 1.13.0a0): without their deps,
  # which requirements.txt pins.
  # BUILD_CUDA_EXT=0: auto-gptq's sdist without its CUDA extensions (requirements-nodeps.txt).
  if [[ -f "$nodeps" ]]; then
    BUILD_CUDA_EXT=0 "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$nodeps"
  fi
  touch "$venv/.complete"
fi
ln -sfn "$venv" "$here/.venv"
echo "[peer] venv ready: $venv"
# llama.cpp's own tools (llama-perplexity, llama-quantize) from the same llama-cpp-python sdist,
# cached next to the venv; a failed build stops here (set -e) instead of silently skipping tests.
bash "$here/make-llama-tools.sh" "$venv"
