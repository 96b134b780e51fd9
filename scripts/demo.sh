#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, and runs configs/quickstart.yaml.
# Arguments are recipe overrides, e.g. model.path=../shared/models/stories260K/stories260K.bin
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${LLMOPT_BUILD_DIR:-build}
if grep -qiE '^LLMOPT_BUILD_TESTS:BOOL=(ON|TRUE|YES|Y|1)$' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null; then
  # A build dir that scripts/test.sh configured: keep its options (turning the tests off would
  # make a later scripts/test.sh run no test or rebuild them; turning unity on would rebuild
  # everything) and build only the two binaries the demo runs.
  LLMOPT_DEPS=build LLMOPT_BUILD_TARGETS="llmopt llmopt-native" bash scripts/build.sh
else
  LLMOPT_DEPS=build LLMOPT_BUILD_TARGETS="llmopt llmopt-native" bash scripts/build.sh \
    -DLLMOPT_BUILD_TESTS=OFF -DLLMOPT_BUILD_BENCH=OFF \
    -DLLMOPT_UNITY_BUILD=ON  # torch layers in a few large TUs: first build 310 s -> 163 s on 2 cores
fi
exec "$BUILD_DIR/apps/llmopt/llmopt" run configs/quickstart.yaml "$@"
