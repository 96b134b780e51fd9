#!/usr/bin/env bash
# Issue 9's "better than llama.cpp's own quantizer at equal size" check: a Q4_0 GGUF of
# tinyllama-bpe-17m written by llmopt (GPTQ / AWQ+GPTQ / calibrated RTN) against llama-quantize
# Q4_0 with an imatrix from the same calibration text, all measured by llama.cpp's own
# `llama-perplexity --kl-divergence` against the f32 model on the held-out test split.
#   bench/gptq_vs_llama_quantize.sh [WORKDIR]     (needs build/ and tests/peer/.llama-tools)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
W="${1:-/tmp/llmopt-gptq-vs-llama}"; mkdir -p "$W"
L="$here/build/apps/llmopt/llmopt"
T="$here/tests/peer/.llama-tools"
M="$here/../shared/models/tinyllama-bpe-17m"
TEXT="$here/../shared/text/tinystories_val.txt"
EVAL="$M/reference/test_split.txt"
FMT="${FMT:-q4_0}"; LQ="${LQ:-Q4_0}"
head -c 100000 "$TEXT" > "$W/cal.txt"                       # calibration: first 100 kB
"$L" -q convert "$M" "$W/f32.gguf" --to gguf
"$T/llama-imatrix" -m "$W/f32.gguf" -f "$W/cal.txt" -o "$W/imatrix.dat" -c 256 -t 2 > "$W/imatrix.log" 2>&1
"$T/llama-quantize" --pure --token-embedding-type f32 --imatrix "$W/imatrix.dat" "$W/f32.gguf" "$W/llama-$FMT-imatrix.gguf" "$LQ" > "$W/lq.log" 2>&1
"$T/llama-quantize" --pure --token-embedding-type f32 "$W/f32.gguf" "$W/llama-$FMT.gguf" "$LQ" >> "$W/lq.log" 2>&1
for m in rtn gptq awq awq_gptq; do
  "$L" -q quantize "$M" "$W/llmopt-$FMT-$m.gguf" --format "$FMT" --method "$m" --calibration "$W/cal.txt" \
    --calibration-samples 96 --calibration-seq-len 256 ${ACT_ORDER:+--act-order}
done
"$T/llama-perplexity" -m "$W/f32.gguf" -f "$EVAL" -c 256 -t 2 --kl-divergence-base "$W/base.kld" > "$W/base.log" 2>&1
printf "%-28s %10s %10s %12s\n" file bytes ppl kld_mean
for f in "$W"/llama-$FMT.gguf "$W"/llama-$FMT-imatrix.gguf "$W"/llmopt-$FMT-*.gguf; do
  "$T/llama-perplexity" -m "$f" -f "$EVAL" -c 256 -t 2 --kl-divergence-base "$W/base.kld" --kl-divergence > "$f.log" 2>&1
  ppl=$(grep -oP 'Mean PPL\(Q\)\s*:\s*\K[0-9.]+' "$f.log" | head -1)
  kld=$(grep -oP 'Mean\s+KLD:\s*\K[0-9.]+' "$f.log" | head -1)
  printf "%-28s %10s %10s %12s\n" "$(basename "$f")" "$(stat -c %s "$f")" "$ppl" "$kld"
done
