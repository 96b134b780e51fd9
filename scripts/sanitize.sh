#!/usr/bin/env bash
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer (gcc): configures and builds
# build-asan (RelWithDebInfo, -DLLMOPT_SANITIZE=ON) and runs ctest there; arguments go to ctest
# (e.g. -L unit). Leak checking is off: libtorch's static initialisers keep allocations for the
# life of the process, which LeakSanitizer reports at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLLMOPT_SANITIZE=ON \
  -DLLMOPT_BUILD_BENCH=OFF >&2
cmake --build build-asan -j"$(nproc)" >&2
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:detect_odr_violation=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir build-asan -j2 --output-on-failure --timeout 1500 "$@"
