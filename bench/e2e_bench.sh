#!/usr/bin/env bash
# End-to-end speed benchmark of issue 2: a random 134M-parameter Llama (dim 768, 12 layers,
# 12 heads, FFN 2048, vocab 32000, untied output) in F32, prefill 128 tokens and decode 128 tokens
# at 2 threads. Prints llmopt bench's JSON; results go to bench/RESULTS.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${LLMOPT_BIN:-build/apps/llmopt/llmopt}
OUT=${BENCH_DIR:-$(mktemp -d)}
THREADS=${THREADS:-2}
if [[ ! -f "$OUT/bench134m/config.json" ]]; then
  "$BIN" synth "$OUT/bench134m" --dim 768 --layers 12 --heads 12 --kv-heads 12 --ffn 2048 --vocab 32000 --seed 1 >&2
fi
"$BIN" --threads "$THREADS" bench "$OUT/bench134m" -p 128 -n 128 -r 3 --json -
