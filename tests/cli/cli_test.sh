#!/usr/bin/env bash
# End-to-end checks of the CLI contract (DESIGN.md): exit codes, error messages naming the file,
# JSON keys, and a synth -> convert -> eval -> bench chain on a tiny model.
set -uo pipefail
BIN=${LLMOPT_BIN:?LLMOPT_BIN must point at the llmopt binary}
SHARED=${LLMOPT_SHARED:-$(dirname "$0")/../../../shared}
export LLMOPT_THREADS=1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
check() {  # check NAME EXPECTED_RC PATTERN -- command...
  local name=$1 want=$2 pattern=$3
  shift 4
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  if [[ $rc -ne $want ]] || ! grep -qE -- "$pattern" <<<"$out"; then
    echo "FAIL $name: rc=$rc (want $want), output did not match /$pattern/:"
    echo "$out" | head -20
    fail=$((fail + 1))
  else
    echo "ok   $name"
    pass=$((pass + 1))
  fi
}

# Bad input -> exit 2 with the file named.
check missing-model 2 "nope.gguf" -- "$BIN" info "$TMP/nope.gguf"
printf 'GGUF\x03\x00\x00\x00' >"$TMP/trunc.gguf"
check truncated-gguf 2 "trunc.gguf" -- "$BIN" info "$TMP/trunc.gguf"
check unknown-option 2 "bogus" -- "$BIN" eval "$TMP/x" --data "$TMP/y" --bogus
check unknown-command 2 "" -- "$BIN" frobnicate
check bad-protocol 2 "valid: llamacpp" -- "$BIN" eval "$SHARED/models/stories260K/stories260K.llamacpp-f32.gguf" \
  --data "$SHARED/text/tinystories_val.txt" --protocol nope
check llama2c-needs-tokenizer 2 "tokenizer" -- "$BIN" generate "$SHARED/models/stories260K/stories260K.bin" --prompt hi
check bad-threads 2 "LLMOPT_THREADS" -- env LLMOPT_THREADS=abc "$BIN" info "$TMP/nope.gguf"

# A tiny chain: synth (with a real tokenizer) -> info -> convert -> eval -> generate -> bench.
S="$SHARED/models/stories260K"
check synth 0 "" -- "$BIN" synth "$TMP/tiny" --preset tiny --tokenizer "$S/tok512.bin" --seed 3
check info-json 0 '"params"' -- "$BIN" info "$TMP/tiny" --json -
check convert-gguf 0 "" -- "$BIN" convert "$TMP/tiny" "$TMP/tiny.gguf" --to gguf --type f16
check info-gguf 0 "F16" -- "$BIN" info "$TMP/tiny.gguf"
# info --json: linear_bits_per_weight = projection bytes as stored x 8 / their weights. stories260K
# rtn q4_0: 30 projections at 4.5 bits, the five 172-wide down_proj in f16 -> 7.2938 (quantize's figure).
check info-bits-f32 0 '"linear_bits_per_weight": 32\.0' -- "$BIN" info "$S/stories260K.bin" --tokenizer "$S/tok512.bin" --json -
check quantize-q4_0 0 "7\.294 bits per linear weight" -- "$BIN" quantize "$S/stories260K.bin" "$TMP/s-q4_0.gguf" \
  --tokenizer "$S/tok512.bin" --method rtn --format q4_0
check info-bits-q4_0 0 '"linear_bits_per_weight": 7\.2937' -- "$BIN" info "$TMP/s-q4_0.gguf" --json -
check tokenize-json 0 '"ids":\[1,' -- "$BIN" tokenize "$S/tok512.bin" --text "Once upon a time" --json
check eval-json 0 '"perplexity"' -- "$BIN" eval "$S/stories260K.bin" --tokenizer "$S/tok512.bin" \
  --data "$SHARED/text/tinystories_val.txt" --ctx 128 --limit 4 --json -
check eval-baseline 0 '"kld_p99"' -- "$BIN" eval "$S/stories260K.llamacpp-Q4_K_M.gguf" --baseline "$S/stories260K.llamacpp-f32.gguf" \
  --data "$SHARED/text/tinystories_val.txt" --ctx 128 --limit 4 --json -
check generate 0 "^Once upon a time, there was a little girl named Lily" -- "$BIN" generate "$S/stories260K.bin" \
  --tokenizer "$S/tok512.bin" --prompt "Once upon a time" -n 16
check bench-json 0 '"tg_tok_s"' -- "$BIN" bench "$TMP/tiny" -p 16 -n 8 -r 2 --json -
# generate/bench on the CPU run in llmopt-native (no libtorch); --engine torch keeps the torch engine.
check bench-native 0 '"engine": "native"' -- "$BIN" bench "$TMP/tiny" -p 16 -n 8 -r 1 --json -
check bench-torch 0 '"engine": "torch"' -- "$BIN" bench "$TMP/tiny" -p 16 -n 8 -r 1 --engine torch --json -
check generate-torch 0 "^Once upon a time, there was a little girl named Lily" -- "$BIN" generate "$S/stories260K.bin" \
  --tokenizer "$S/tok512.bin" --prompt "Once upon a time" -n 16 --engine torch
check bad-engine 2 "unknown --engine 'gpu'" -- "$BIN" bench "$TMP/tiny" -p 4 -n 0 -r 1 --engine gpu
check native-not-cuda 2 "CPU only" -- "$BIN" bench "$TMP/tiny" -p 4 -n 0 -r 1 --engine native --device cuda
check native-bad-model 2 "nope.gguf" -- "$BIN" generate "$TMP/nope.gguf" --prompt hi
check bad-device 2 "unknown device 'tpu'" -- "$BIN" bench "$TMP/tiny" -p 4 -n 0 -r 1 --device tpu
check unavailable-device 2 "'cuda:99' requested" -- "$BIN" generate "$S/stories260K.bin" --tokenizer "$S/tok512.bin" \
  --prompt hi -n 1 --device cuda:99
check no-half-written 2 "" -- "$BIN" convert "$TMP/tiny" "$TMP/out.gguf" --to gguf --type q9_9
if [[ -e "$TMP/out.gguf" ]]; then echo "FAIL no-half-written: output exists after a failed convert"; fail=$((fail + 1)); fi

echo "cli: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
