#!/usr/bin/env bash
# Issue 9's "better than llama.cpp's own quantizer at equal size" check: a Q4_0 GGUF of
# tinyllama-bpe-17m written by llmopt (GPTQ / AWQ+GPTQ / calibrated RTN) against llama-quantize
# Q4_0 with an imatrix from the same calibration text, all measured by llama.cpp's own
# `llama-perplexity --kl-divergence` against the f32 model on the held-out test split.
#   bench/gptq_vs_llama_quantize.sh [WORKDIR]     (needs build/ and tests/peer/.llama-tools)
#   FMT=q4_k LQ=Q4_K bench/gptq_vs_llama_quantize.sh   k-quants: rows that are not whole 256-blocks
#     (tinyllama-bpe-17m's 704-wide down_proj) take llama-quantize's own fallback (Q4_K -> q5_0)
#     on both sides, so the files have the same size. `--pure` skips that fallback (llama-quantize
#     then fails on those rows), so llama.cpp runs as Q4_K_S (on 6 layers: every projection q4_K,
#     down_proj falling back to q5_0) with attn_v forced to q4_k (Q4_K_S gives the first 4 q5_K).
#   METHODS="gptq awq" ...: llmopt methods to run; NAME_noclip = NAME with --no-awq-clip.
# The f32 GGUF, the imatrix and the f32 logits are reused when WORKDIR already holds them.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
W="${1:-/tmp/llmopt-gptq-vs-llama}"; mkdir -p "$W"
L="$here/build/apps/llmopt/llmopt"
T="$here/tests/peer/.llama-tools"
M="$here/../shared/models/tinyllama-bpe-17m"
TEXT="$here/../shared/text/tinystories_val.txt"
EVAL="$M/reference/test_split.txt"
FMT="${FMT:-q4_0}"; LQ="${LQ:-Q4_0}"
FB=f16; LQARGS=(--pure)
if [ "$LQ" = Q4_K ]; then FB=q5_0; LQ=Q4_K_S; LQARGS=(--tensor-type attn_v=q4_k); fi
head -c 100000 "$TEXT" > "$W/cal.txt"                       # calibration: first 100 kB
[ -s "$W/f32.gguf" ] || "$L" -q convert "$M" "$W/f32.gguf" --to gguf
[ -s "$W/imatrix.dat" ] ||
  "$T/llama-imatrix" -m "$W/f32.gguf" -f "$W/cal.txt" -o "$W/imatrix.dat" -c 256 -t 2 > "$W/imatrix.log" 2>&1
"$T/llama-quantize" "${LQARGS[@]}" --token-embedding-type f32 --imatrix "$W/imatrix.dat" "$W/f32.gguf" "$W/llama-$FMT-imatrix.gguf" "$LQ" > "$W/lq.log" 2>&1
"$T/llama-quantize" "${LQARGS[@]}" --token-embedding-type f32 "$W/f32.gguf" "$W/llama-$FMT.gguf" "$LQ" >> "$W/lq.log" 2>&1
for m in ${METHODS:-rtn gptq awq awq_noclip awq_gptq}; do
  meth="${m%_noclip}"
  "$L" -q quantize "$M" "$W/llmopt-$FMT-$m.gguf" --format "$FMT" --method "$meth" --calibration "$W/cal.txt" \
    --calibration-samples 96 --calibration-seq-len 256 --fallback "$FB" ${ACT_ORDER:+--act-order} \
    $([ "$m" != "$meth" ] && echo --no-awq-clip)
done
[ -s "$W/base.kld" ] ||
  "$T/llama-perplexity" -m "$W/f32.gguf" -f "$EVAL" -c 256 -t 2 --kl-divergence-base "$W/base.kld" > "$W/base.log" 2>&1
printf "%-28s %10s %10s %12s\n" file bytes ppl kld_mean
for f in "$W"/llama-$FMT.gguf "$W"/llama-$FMT-imatrix.gguf $(for m in ${METHODS:-rtn gptq awq awq_noclip awq_gptq}; do echo "$W/llmopt-$FMT-$m.gguf"; done); do
  "$T/llama-perplexity" -m "$f" -f "$EVAL" -c 256 -t 2 --kl-divergence-base "$W/base.kld" --kl-divergence > "$f.log" 2>&1
  ppl=$(grep -oP 'Mean PPL\(Q\)\s*:\s*\K[0-9.]+' "$f.log" | head -1)
  kld=$(grep -oP 'Mean\s+KLD:\s*\K[0-9.]+' "$f.log" | head -1)
  printf "%-28s %10s %10s %12s\n" "$(basename "$f")" "$(stat -c %s "$f")" "$ppl" "$kld"
done
