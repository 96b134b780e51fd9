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
# A group larger than a row (stories260K's rows are 64 wide) -> exit 2 naming the projection, no output.
check quantize-group-larger-than-row 2 "group_size: 128 .*larger than the rows of model\.layers\.0\.self_attn\.q_proj \(64 values\)" -- \
  "$BIN" quantize "$S/stories260K.bin" "$TMP/s-int4-hf" --tokenizer "$S/tok512.bin" --method rtn --format int4 \
  --group-size 128 --to hf
check quantize-group-no-output 1 "" -- test -e "$TMP/s-int4-hf"
# A GPTQ-layout HF directory: the native engine holds its projections packed as int-N
# (infer/packed_layers.h); the torch engine runs it too.
check quantize-int8-hf 0 "" -- "$BIN" quantize "$S/stories260K.bin" "$TMP/s-int8-hf" --tokenizer "$S/tok512.bin" \
  --method rtn --format int8 --group-size -1 --to hf
check eval-gptq-dir 0 '"perplexity"' -- "$BIN" eval "$TMP/s-int8-hf" --data "$SHARED/text/tinystories_val.txt" \
  --ctx 128 --limit 2 --json -
check eval-gptq-dir-native 0 '"engine": "native"' -- "$BIN" eval "$TMP/s-int8-hf" \
  --data "$SHARED/text/tinystories_val.txt" --ctx 128 --limit 2 --engine native --json -
check eval-gptq-dir-torch 0 '"engine": "torch"' -- "$BIN" eval "$TMP/s-int8-hf" \
  --data "$SHARED/text/tinystories_val.txt" --ctx 128 --limit 2 --engine torch --json -
check info-bits-q4_0 0 '"linear_bits_per_weight": 7\.2937' -- "$BIN" info "$TMP/s-q4_0.gguf" --json -
# llama2.c v2 int8 (q8_0, groups of 32) through the model: byte for byte the reference file (issue 9).
mkdir -p "$TMP/q80"
check convert-llama2c-q8_0 0 "" -- "$BIN" convert "$S/stories260K.bin" "$TMP/q80/stories260K_q80.bin" \
  --tokenizer "$S/tok512.bin" --to llama2c --type q8_0
check convert-llama2c-q8_0-bytes 0 "" -- cmp "$TMP/q80/stories260K_q80.bin" "$S/stories260K_q80_v2.bin"
check convert-q8_0-not-gguf 2 "llmopt quantize" -- "$BIN" convert "$S/stories260K.bin" "$TMP/x.gguf" \
  --tokenizer "$S/tok512.bin" --to gguf --type q8_0
check tokenize-json 0 '"pieces"' -- "$BIN" tokenize "$S/tok512.bin" --text "Once upon a time" --json -
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

# Issue 8: limits, defaults in --help, -t, --json OUT everywhere, output paths, synth's tokenizer.
check eval-ctx-over-model 2 "--ctx 100000 exceeds the context length of .*stories260K.bin: 512" -- "$BIN" eval \
  "$S/stories260K.bin" --tokenizer "$S/tok512.bin" --data "$SHARED/text/tinystories_val.txt" --ctx 100000
printf 'Once upon a time\n' >"$TMP/short.txt"
check eval-ctx-over-text 2 "--ctx 256 exceeds the length of .*short.txt: [0-9]+ tokens" -- "$BIN" eval \
  "$S/stories260K.bin" --tokenizer "$S/tok512.bin" --data "$TMP/short.txt" --ctx 256
check generate-stops-at-ctx 0 "stopping after [0-9]+ tokens, at the model's context length 512" -- "$BIN" generate \
  "$S/stories260K.bin" --tokenizer "$S/tok512.bin" --prompt "Once upon a time" -n 100000
check generate-stops-at-ctx-torch 0 "context length 512" -- "$BIN" generate "$S/stories260K.bin" \
  --tokenizer "$S/tok512.bin" --prompt "Once upon a time" -n 600 --engine torch
check help-defaults 0 "--ctx INT:POSITIVE=512" -- "$BIN" eval --help
check help-defaults-native 0 "--n-predict INT:NONNEGATIVE=128" -- "$BIN" generate --help
check threads-alias 0 '"threads": 3' -- "$BIN" -t 3 bench "$TMP/tiny" -p 4 -n 2 -r 1 --json -
check threads-alias-after 0 '"threads": 3' -- "$BIN" bench "$TMP/tiny" -p 4 -n 2 -r 1 -t 3 --json -
check generate-json-file 0 "^Once upon a time" -- "$BIN" generate "$S/stories260K.bin" --tokenizer "$S/tok512.bin" \
  --prompt "Once upon a time" -n 4 --json "$TMP/gen.json"
check generate-json-file-keys 0 '"prompt_ids"' -- cat "$TMP/gen.json"
check stages-json 0 '"evaluate"' -- "$BIN" stages --json -
check out-in-missing-dir 2 "$TMP/nodir/x.gguf" -- "$BIN" convert "$TMP/tiny" "$TMP/nodir/x.gguf" --to gguf
check json-in-missing-dir 2 "$TMP/nodir/r.json" -- "$BIN" info "$TMP/tiny" --json "$TMP/nodir/r.json"
# tiny preset, vocab 300, untied: 2 x 300 x 64 + 2 x 45440 (layers) + 64 = 129344 parameters.
check synth-bare 0 "129344 params in 21 tensors" -- "$BIN" synth "$TMP/bare" --preset tiny --vocab 300 --seed 1
check synth-bare-gguf 0 "" -- "$BIN" convert "$TMP/bare" "$TMP/bare.gguf" --to gguf
check synth-bare-tokenize 0 "^1( [0-9]+){6}$" -- "$BIN" tokenize "$TMP/bare.gguf" --text "hi yo"
check synth-bare-generate 0 "^hi" -- "$BIN" generate "$TMP/bare.gguf" --prompt "hi" -n 4
check synth-vocab-too-small 2 "at least 260" -- "$BIN" synth "$TMP/bare2" --preset tiny --vocab 100
(umask 027 && "$BIN" convert "$TMP/tiny" "$TMP/mode.gguf" --to gguf >/dev/null 2>&1)
check output-mode 0 "^640$" -- stat -c %a "$TMP/mode.gguf"
# ONNX export (docs/onnx.md): a directory laid out as optimum does, and exit 2 naming the option.
check convert-onnx 0 "checker and strict shape inference passed" -- "$BIN" convert "$S/stories260K.bin" "$TMP/onnx" \
  --to onnx --tokenizer "$S/tok512.bin" --onnx-variant both --type f16
check convert-onnx-files 0 "config.json model.onnx model_nocache.onnx tokenizer.json" -- bash -c "cd '$TMP/onnx' && echo *"
check convert-onnx-opset-low 2 "opset 13 is not supported: opset must be in 14\.\.21" -- "$BIN" convert "$S/stories260K.bin" \
  "$TMP/onnx-bad" --to onnx --tokenizer "$S/tok512.bin" --opset 13
check convert-onnx-opset-high 2 "opset 22 is not supported" -- "$BIN" convert "$S/stories260K.bin" "$TMP/onnx-bad" \
  --to onnx --tokenizer "$S/tok512.bin" --opset 22
check convert-onnx-bf16 2 "writes --type f32 or f16, not 'bf16'" -- "$BIN" convert "$S/stories260K.bin" "$TMP/onnx-bad" \
  --to onnx --tokenizer "$S/tok512.bin" --type bf16
check convert-onnx-optimize-f16 2 "optimize: true writes float32 graphs only" -- "$BIN" convert "$S/stories260K.bin" \
  "$TMP/onnx-bad" --to onnx --tokenizer "$S/tok512.bin" --optimize --type f16
check convert-onnx-variant 2 "onnx_variant 'merged' \(valid: kv, nocache, both\)" -- "$BIN" convert "$S/stories260K.bin" \
  "$TMP/onnx-bad" --to onnx --tokenizer "$S/tok512.bin" --onnx-variant merged
check convert-onnx-nothing-written 1 "" -- test -e "$TMP/onnx-bad/model.onnx"
printf 'name: bad-onnx\nmodel: {path: %s, tokenizer: %s}\npipeline:\n  - {type: export, formats: [onnx], dtype: bf16}\n' \
  "$S/stories260K.bin" "$S/tok512.bin" > "$TMP/bad-onnx.yaml"
check run-export-onnx-bf16 2 "onnx is written as f32 or f16, but dtype is bf16" -- "$BIN" run "$TMP/bad-onnx.yaml" \
  --out "$TMP/bad-onnx-run"

echo "cli: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
