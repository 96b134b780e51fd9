#!/usr/bin/env bash
# Builds llmopt with -DLLMOPT_CUDA=ON against the libtorch of a GPU machine's PyTorch and runs the
# test suite there (the `device` tool's machines: PyTorch + CUDA, no Debian dev packages, no
# network). Debian 12's dev packages travel as .debs (scripts/fetch-cuda-check-deps.sh puts them
# in .devdeps/debs) and the models the data tests read as a copy in .devdata/shared; both paths
# are ignored by git. Results go to $OUT (default build-cuda/out).
#   usage: scripts/cuda-check.sh [ctest -LE regex]   (default: peer|browser|cli|data excluded)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/build-cuda/out}
mkdir -p "$OUT"
exec > >(tee "$OUT/cuda-check.log") 2>&1
R=$ROOT/.devdeps/root
if [ ! -d "$R/usr/include" ]; then
  mkdir -p "$R"
  for f in "$ROOT"/.devdeps/debs/*.deb; do
    dpkg -x "$f" "$R" 2>/dev/null || (cd "$R" && ar p "$f" data.tar.xz | tar xJ) || { echo "cannot unpack $f"; exit 1; }
  done
fi
echo "== machine"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
cat /etc/os-release | head -2; g++ --version | head -1; cmake --version | head -1
TORCH_PREFIX=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
python3 -c 'import torch;print("torch", torch.__version__, "cuda", torch.version.cuda, "cxx11abi", torch.compiled_with_cxx11_abi())'
export LD_LIBRARY_PATH=$R/usr/lib/x86_64-linux-gnu:$R/usr/lib/x86_64-linux-gnu/openblas-pthread:${LD_LIBRARY_PATH:-}
export LIBRARY_PATH=$R/usr/lib/x86_64-linux-gnu CPATH=$R/usr/include PATH=$R/usr/bin:$PATH
export PKG_CONFIG_LIBDIR=$R/usr/lib/x86_64-linux-gnu/pkgconfig:$R/usr/share/pkgconfig PKG_CONFIG_SYSROOT_DIR=$R
SHARED=${LLMOPT_SHARED_DIR:-$ROOT/.devdata/shared}
[ -d "$SHARED" ] || SHARED=$ROOT/../shared
echo "== configure"
cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLMOPT_CUDA=ON -DLLMOPT_BUILD_BENCH=OFF \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$R/usr" -DPKG_CONFIG_EXECUTABLE="$R/usr/bin/pkgconf" \
  -DProtobuf_PROTOC_EXECUTABLE="$R/usr/bin/protoc" -DProtobuf_INCLUDE_DIR="$R/usr/include" \
  -DProtobuf_LIBRARY="$R/usr/lib/x86_64-linux-gnu/libprotobuf.so" -DTORCH_CUDA_ARCH_LIST=9.0 \
  -DLLMOPT_SHARED_DIR="$SHARED" > "$OUT/configure.log" 2>&1 || { tail -40 "$OUT/configure.log"; exit 1; }
tail -3 "$OUT/configure.log"
echo "== build"
start=$(date +%s)
cmake --build build-cuda -j"$(nproc)" > "$OUT/build.log" 2>&1 || { grep -m20 -A5 "error" "$OUT/build.log"; tail -20 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - start )) s"
echo "== libstdc++: $(g++ -print-file-name=libstdc++.so) $(g++ -print-file-name=libstdc++.a) LD_PRELOAD=${LD_PRELOAD:-}"
readelf -d build-cuda/tests/test_model_data | grep NEEDED | head -3
nm -D build-cuda/tests/test_model_data | grep remove_all
echo "== tests"
cd build-cuda
# Unit tests (CPU paths of a CUDA build, plus label cuda), then the data tests whose files travel.
ctest -j14 --output-on-failure -LE "${1:-peer|browser|cli|data}" --timeout 300 > "$OUT/ctest.log" 2>&1
rc=$?
grep -E "tests passed|tests failed|\(Failed\)|\*\*\*|Not Run" "$OUT/ctest.log" | head -30
for t in test_cuda test_cuda_data test_model_data test_infer_data; do
  if ! ./tests/$t > "$OUT/$t.log" 2>&1; then
    rc=1
    command -v cuda-gdb > /dev/null && cuda-gdb -batch -ex run -ex bt --args ./tests/$t > "$OUT/$t.bt" 2>&1
  fi
  echo "-- $t"; grep -E "max |perplexity|PASSED|FAILED|^\[  FAILED" "$OUT/$t.log" | head -12
done
echo "== bench (134M shape, F32)"
./apps/llmopt/llmopt synth /tmp/b134 --preset bench134m -q > /dev/null
for d in cuda cpu; do echo "device $d"; ./apps/llmopt/llmopt bench /tmp/b134 --device $d -p 128 -n 128 -r 5 -q; done
echo "torch engine on the cpu"; ./apps/llmopt/llmopt bench /tmp/b134 --engine torch -p 128 -n 128 -r 5 -q
exit $rc
