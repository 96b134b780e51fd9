#!/usr/bin/env bash
# QLoRA memory benchmark (issue 10): peak resident memory of `llmopt finetune --method qlora`
# against `--method full` (AdamW over every weight) on the 134M synth shape (dim 768, 12 layers,
# 12 heads, ffn 2048, vocab 32000, untied head: `llmopt synth --preset bench134m`), same batch,
# sequence length, steps and threads. Each run is a fresh process measured by /usr/bin/time -v
# (Maximum resident set size: loading, training steps and writing the result all count).
# The acceptance bar is QLoRA <= 0.35 x full.
#
# Usage: bench/qlora_memory.sh [WORKDIR] (default /tmp/llmopt-qlora-memory; the synth model is
# kept there). Environment: LLMOPT_BIN (default build/apps/llmopt/llmopt), STEPS (2), BATCH (4),
# SEQ (128), THREADS (2), SHARED (../shared), CKPT (none | qlora | both: which runs use
# --grad-checkpoint, default none).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${LLMOPT_BIN:-$here/build/apps/llmopt/llmopt}"
work="${1:-/tmp/llmopt-qlora-memory}"
shared="${SHARED:-$here/../shared}"
steps="${STEPS:-2}" batch="${BATCH:-4}" seq="${SEQ:-128}" threads="${THREADS:-2}" ckpt="${CKPT:-none}"
[[ -x "$bin" ]] || { echo "llmopt not found at $bin (build it, or set LLMOPT_BIN)" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "/usr/bin/time missing (Debian package 'time')" >&2; exit 1; }
mkdir -p "$work"
model="$work/bench134m"
if [[ ! -f "$model/model.safetensors" ]]; then
  "$bin" -q synth "$model" --preset bench134m --seed 1 >&2
fi
data="$work/tinystories-300k.txt"
head -c 300000 "$shared/text/tinystories_val.txt" > "$data"

declare -A rss
for method in full qlora; do
  rm -rf "$work/ft-$method"
  extra=()
  if [[ "$ckpt" == both || ( "$ckpt" == qlora && "$method" == qlora ) ]]; then extra=(--grad-checkpoint); fi
  /usr/bin/time -v "$bin" -q -t "$threads" finetune "$model" --data "$data" --seq-len "$seq" \
      --batch-size "$batch" --steps "$steps" --method "$method" --out "$work/ft-$method" "${extra[@]}" \
      > "$work/$method.out" 2> "$work/$method.time" || { cat "$work/$method.time" >&2; exit 1; }
  rss[$method]=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/$method.time")
  wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/$method.time")
  printf '%-6s %-18s peak RSS %8.1f MiB  wall %s  (%s)\n' "$method" "${extra[*]:-}" "$(echo "${rss[$method]} / 1024" | bc -l)" "$wall" \
      "$(cat "$work/$method.out")"
done
ratio=$(echo "${rss[qlora]} / ${rss[full]}" | bc -l)
printf 'qlora / full peak RSS = %.3f (bar: <= 0.35; batch %s x seq %s, %s steps, %s threads, checkpointing: %s)\n' \
    "$ratio" "$batch" "$seq" "$steps" "$threads" "$ckpt"
