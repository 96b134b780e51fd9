#!/usr/bin/env bash
# Full-size peer checks: the slow peer tests at the sizes they had before CI was cut back to its
# 30 minutes (scripts/test.sh, .ci/run). Same test files, same references (llama.cpp's tools,
# ONNX Runtime) and the same tolerances; only the amount of work differs. LLMOPT_PEER_FULL=1
# (tests/peer/conftest.py: ci_or_full) selects, per file:
#   test_llama_tasks.py    all 1267 Winogrande documents and 600 whole LAMBADA passages
#                          (CI: 400, and 200 passages cut to their last 120 characters)
#   test_llama_kquants.py  every k-quant format and the synthetic imatrix on the 17M model too, the
#                          quantize stage on it, 40 kB of llama-imatrix calibration text (CI: every
#                          format on the synth model, the 17M on a subset, 10 kB)
#   test_onnx_quant.py     opset 21 for the desc_act GPTQ case too, and 6,000 bytes of held-out
#                          text (CI: 2,400, which hold the same 4 scored windows)
# Measured (2-core VM, loaded): see docs/contributing.md ("CI time").
#
#   bash bench/peer_full_size.sh                     # the three files above
#   bash bench/peer_full_size.sh tests/peer/test_llama_tasks.py -k winogrande
# Needs the build (LLMOPT_BIN, default build/apps/llmopt/llmopt) and the peer venv
# (tests/peer/make-venv.sh, which also builds llama.cpp's tools).
set -euo pipefail
cd "$(dirname "$0")/.."
export LLMOPT_PEER_FULL=1
export LLMOPT_BIN=${LLMOPT_BIN:-$PWD/build/apps/llmopt/llmopt}
export LLMOPT_SHARED_DIR=${LLMOPT_SHARED_DIR:-$(cd .. && pwd)/shared}
if [[ $# -eq 0 ]]; then
  set -- tests/peer/test_llama_tasks.py tests/peer/test_llama_kquants.py tests/peer/test_onnx_quant.py
fi
exec bash tests/peer/run-pytest.sh --durations=10 "$@"
