#!/usr/bin/env bash
# Installs missing Debian packages (LLMOPT_DEPS=build: only the build's), configures and builds
# llmopt into ${LLMOPT_BUILD_DIR:-build}.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh "${LLMOPT_DEPS:-all}"
BUILD_DIR=${LLMOPT_BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${LLMOPT_BUILD_TYPE:-Release} "$@" >&2
cmake --build "$BUILD_DIR" -j"$(nproc)" >&2
