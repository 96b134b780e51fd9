#!/usr/bin/env bash
# Builds (once) llama.cpp's own command-line tools used as referees by the peer checks:
# llama-perplexity (perplexity, KL divergence), llama-quantize and llama-imatrix (importance
# matrices for llama-quantize --imatrix), from the llama.cpp source
# vendored in the pinned llama-cpp-python sdist (vendor/llama.cpp), so the tools and the Python
# binding are the same llama.cpp. Usage: make-llama-tools.sh [VENV] (VENV's pip fetches the sdist;
# default tests/peer/.venv). Called by make-venv.sh after the venv exists.
#
# Cached in ${XDG_CACHE_HOME:-$HOME/.cache}/llmopt/llama-tools-<sdist version>/ (bin/ + .complete),
# linked as tests/peer/.llama-tools. Portable CPU-only Release build: no -march=native, no OpenMP,
# BLAS, CUDA or curl; static libraries so bin/ is self-contained; only these targets are built (a
# cache missing one of them, e.g. from before llama-imatrix was added, is rebuilt).
# Any failure exits non-zero with the build log's tail (set -e): never a silent skip.
# LLAMA_CPP_SDIST=/path/to/llama_cpp_python-X.tar.gz skips the download.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-$here/.venv}"
ver=$(sed -n 's/^llama-cpp-python==\([0-9.]*\).*/\1/p' "$here/requirements.txt")
[[ -n "$ver" ]] || { echo "[llama-tools] no llama-cpp-python==X pin in requirements.txt" >&2; exit 1; }
cache="${LLMOPT_LLAMA_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/llmopt/llama-tools-$ver}"
targets=(llama-perplexity llama-quantize llama-imatrix)

mkdir -p "$cache"
exec 8>"$cache.lock"
flock 8   # one builder at a time; a second caller waits, then finds the marker
# A complete cache that lacks a target added since (llama-imatrix) builds just the missing ones
# and keeps bin/ and the link, so peer checks running meanwhile keep their tools.
build=("${targets[@]}")
if [[ -f "$cache/.complete" ]]; then
  build=()
  for t in "${targets[@]}"; do [[ -x "$cache/bin/$t" ]] || build+=("$t"); done
fi
if [[ ${#build[@]} -gt 0 ]]; then
  t0=$(date +%s)
  echo "[llama-tools] building ${build[*]} from llama-cpp-python $ver's vendor/llama.cpp" \
       "(one-off, ~3 min on 2 cores) in $cache" >&2
  if [[ ! -f "$cache/.complete" ]]; then
    rm -f "$here/.llama-tools"   # never leave a link to other tools behind a failed build
    rm -rf "$cache/bin"
  fi
  rm -rf "$cache/build" "$cache/src"
  mkdir -p "$cache/sdist" "$cache/src"
  sdist="${LLAMA_CPP_SDIST:-}"
  if [[ -z "$sdist" ]]; then
    sdist=$(ls "$cache"/sdist/llama_cpp_python-"$ver".tar.gz 2>/dev/null || true)
  fi
  if [[ -z "$sdist" ]]; then
    [[ -x "$venv/bin/pip" ]] || { echo "[llama-tools] $venv/bin/pip missing (run make-venv.sh)" >&2; exit 1; }
    # --no-binary for this one package only: with :all:, pip would also build the sdist's build
    # requirements (scikit-build-core...) from source to prepare its metadata (minutes, not 8 s).
    "$venv/bin/pip" download -q --disable-pip-version-check --no-deps \
        --no-binary llama-cpp-python "llama-cpp-python==$ver" -d "$cache/sdist"
    sdist="$cache/sdist/llama_cpp_python-$ver.tar.gz"
  fi
  [[ -f "$sdist" ]] || { echo "[llama-tools] sdist $sdist not found" >&2; exit 1; }
  tar -xzf "$sdist" -C "$cache/src" --strip-components=3 "llama_cpp_python-$ver/vendor/llama.cpp"
  gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  log="$cache/build.log"
  if ! { cmake -S "$cache/src" -B "$cache/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
           -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DGGML_BLAS=OFF \
           -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_CCACHE=OFF -DLLAMA_CURL=OFF \
           -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF \
           -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_BUILD_TESTS=OFF \
           -DGGML_BUILD_EXAMPLES=OFF \
         && cmake --build "$cache/build" --target "${build[@]}" -j "${LLAMA_TOOLS_JOBS:-2}"; } \
         >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "[llama-tools] BUILD FAILED (full log: $log)" >&2
    exit 1
  fi
  mkdir -p "$cache/bin"
  for t in "${build[@]}"; do cp "$cache/build/bin/$t" "$cache/bin/$t.tmp" && mv "$cache/bin/$t.tmp" "$cache/bin/$t"; done
  "$cache/bin/llama-perplexity" --version >&2 || { echo "[llama-tools] llama-perplexity does not run" >&2; exit 1; }
  rm -rf "$cache/build" "$cache/src"   # keep bin/, the sdist and the log only
  echo "$ver" >"$cache/.complete"
  echo "[llama-tools] built in $(( $(date +%s) - t0 )) s" >&2
fi
ln -sfn "$cache/bin" "$here/.llama-tools"
echo "[llama-tools] ready: $cache/bin (${targets[*]})"
