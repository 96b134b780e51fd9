#!/usr/bin/env bash
# Decode speed of the 134M F32 benchmark model against this machine's memory read bandwidth,
# measured alternately (the bandwidth of a shared VM drifts by ±25% from minute to minute, so
# only paired numbers are comparable). Each round: gemv_bench's 2-thread plain read probe
# (sum_f32 over 512 MB), then `llmopt bench -p 0 -n 128 -r 3` at 2 threads. Prints per round the
# read GB/s, decode tok/s, the GB/s decode streams (438 MB of weights per token: every matrix, and
# one embedding row) and their ratio.
# Usage: bench/decode_vs_bandwidth.sh [ROUNDS] (build with -DLLMOPT_BUILD_BENCH=ON first).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-6}
BUILD=${LLMOPT_BUILD_DIR:-build}
OUT=${BENCH_DIR:-$(mktemp -d)}
if [[ ! -f "$OUT/bench134m/config.json" ]]; then
  "$BUILD/apps/llmopt/llmopt" synth "$OUT/bench134m" --dim 768 --layers 12 --heads 12 --kv-heads 12 --ffn 2048 \
    --vocab 32000 --seed 1 >&2
fi
STREAMED=$((438 * 1000 * 1000))
echo "round read_GB/s decode_tok/s decode_GB/s ratio"
for r in $(seq 1 "$ROUNDS"); do
  read_gbs=$("$BUILD/bench/gemv_bench" --benchmark_filter='ReadBandwidth/thr:2' --benchmark_min_time=0.5 \
    --benchmark_format=json 2>/dev/null | python3 -c \
    "import json,sys; b=json.load(sys.stdin)['benchmarks'][0]; print('%.1f' % b['GB/s'])")
  tg=$("$BUILD/apps/llmopt/llmopt" --threads 2 bench "$OUT/bench134m" -p 0 -n 128 -r 3 -q --json - | python3 -c \
    "import json,sys; print('%.1f' % json.load(sys.stdin)['tg_tok_s'])")
  python3 -c "r=$read_gbs; t=$tg; g=t*$STREAMED/1e9; print('$r', r, t, '%.1f' % g, '%.2f' % (g/r))"
done
