#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, prepares the peer-check venv and
# runs every test (unit, data, peer, cli) with ctest -j2. Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
if [[ "${LLMOPT_SKIP_PEER:-0}" != 1 ]]; then
  bash tests/peer/make-venv.sh >&2
fi
cd "${LLMOPT_BUILD_DIR:-build}"
ctest -j2 --output-on-failure --timeout 1500 "$@"
