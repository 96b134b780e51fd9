#!/usr/bin/env bash
# Runs one peer-check file with the venv made by make-venv.sh (ctest test command, see peer.cmake).
# Exits 77 (ctest: skipped) when the venv is missing, e.g. LLMOPT_SKIP_PEER=1 scripts/test.sh.
# Each run gets its own pytest base temp dir, so tests running in parallel never share files.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="$here/.venv/bin/python"
if [[ ! -x "$py" ]]; then
  echo "[peer] $py missing: run tests/peer/make-venv.sh (skipping)"
  exit 77
fi
tmp="$(mktemp -d "${TMPDIR:-/tmp}/llmopt-peer.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
"$py" -m pytest -p no:cacheprovider -q -rA --basetemp "$tmp/pytest" "$@"
