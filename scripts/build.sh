#!/usr/bin/env bash
# Installs missing Debian packages (LLMOPT_DEPS=build: only the build's), configures and builds
# llmopt into ${LLMOPT_BUILD_DIR:-build}. Arguments go to the cmake configure step;
# LLMOPT_BUILD_TARGETS (space-separated) builds only those targets instead of all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh "${LLMOPT_DEPS:-all}"
BUILD_DIR=${LLMOPT_BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${LLMOPT_BUILD_TYPE:-Release} "$@" >&2
targets=()
if [[ -n "${LLMOPT_BUILD_TARGETS:-}" ]]; then
  read -r -a target_names <<<"$LLMOPT_BUILD_TARGETS"
  targets=(--target "${target_names[@]}")
fi
cmake --build "$BUILD_DIR" -j"$(nproc)" "${targets[@]}" >&2
