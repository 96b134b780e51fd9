#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, prepares the peer-check venv and
# runs every test (unit, data, peer, cli) with ctest -j2. Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Tests and benchmarks on explicitly: a build dir that scripts/demo.sh configured has them off
# (its other options, e.g. the unity build, are kept, so nothing already built is rebuilt).
# A fresh build dir (CI's) is a unity build, LLMOPT_UNITY_BUILD's default: what scripts/demo.sh builds.
bash scripts/build.sh -DLLMOPT_BUILD_TESTS=ON -DLLMOPT_BUILD_BENCH=ON
if [[ "${LLMOPT_SKIP_PEER:-0}" != 1 ]]; then
  bash tests/peer/make-venv.sh >&2
fi
cd "${LLMOPT_BUILD_DIR:-build}"
# --no-tests=error: a build dir without tests must fail, not pass with nothing run.
ctest -j2 --output-on-failure --no-tests=error --timeout 1500 "$@"
