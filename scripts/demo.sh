#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, and runs configs/quickstart.yaml.
# Arguments are recipe overrides, e.g. model.path=../shared/models/stories260K/stories260K.bin
set -euo pipefail
cd "$(dirname "$0")/.."
LLMOPT_DEPS=build bash scripts/build.sh -DLLMOPT_BUILD_TESTS=OFF -DLLMOPT_BUILD_BENCH=OFF \
  -DLLMOPT_UNITY_BUILD=ON  # torch layers in a few large TUs: first build 310 s -> 163 s on 2 cores
exec "${LLMOPT_BUILD_DIR:-build}/apps/llmopt/llmopt" run configs/quickstart.yaml "$@"
