#!/usr/bin/env bash
# Creates (once) the Python venv used by the peer checks in tests/peer/: Debian's python3-torch
# (via --system-site-packages) plus pinned ecosystem packages from PyPI. Kept in the user cache,
# keyed by the requirements file, so fresh clones on the same machine reuse it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
req="$here/requirements.txt"
[[ -f "$req" ]] || { echo "[peer] no requirements.txt, nothing to do"; exit 0; }
key=$(sha256sum "$req" | cut -c1-12)
venv="${LLMOPT_PEER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/llmopt/peer-venv-$key}"
if [[ ! -f "$venv/.complete" ]]; then
  rm -rf "$venv"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  touch "$venv/.complete"
fi
ln -sfn "$venv" "$here/.venv"
echo "[peer] venv ready: $venv"
