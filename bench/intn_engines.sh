#!/usr/bin/env bash
# Native vs torch engine on int-N / NF4 models of the 134M synth shape (issue 9: both engines keep
# weights packed). int4 g128 (and int8 per channel): `llmopt quantize --to hf` writes GPTQ's layout,
# `llmopt bench` runs it on each engine, alternating rounds. NF4 has no file format: a recipe
# quantizes in memory and its evaluate stages measure speed on each engine, alternating.
#
#   bench/intn_engines.sh [WORKDIR] [ROUNDS]     (2 threads; prints one line per measurement)
set -euo pipefail
BIN=${BIN:-build/apps/llmopt/llmopt}
W=${1:-/tmp/llmopt-intn-engines}
ROUNDS=${2:-2}
T=${THREADS:-2}
mkdir -p "$W"
[ -d "$W/s134" ] || "$BIN" synth "$W/s134" --preset bench134m --seed 1
for fmt in "int4 128" "int8 -1"; do
  set -- $fmt
  [ -d "$W/s134-$1g$2" ] || "$BIN" -t "$T" quantize "$W/s134" "$W/s134-$1g$2" --method rtn --format "$1" --group-size "$2" --to hf
done
echo "# $(date -u +%FT%TZ) $(uname -n) threads $T, load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  for m in s134-int4g128 s134-int8g-1; do
    for e in native torch; do
      "$BIN" -t "$T" -q bench "$W/$m" --engine "$e" -p 128 -n 64 -r 3 --json - |
        python3 -c "import json,sys; j=json.load(sys.stdin); print('$m', j['engine'], 'round $r', 'pp128 %.1f tok/s' % j['pp_tok_s'], 'tg64 %.2f tok/s' % j['tg_tok_s'], 'rss %.0f MiB' % (j['peak_rss_bytes']/2**20))"
    done
  done
done
# NF4 (blocks of 64; the quantize stage writes it without double quantization), in memory.
for dq in false; do
  cat > "$W/nf4-$dq.yaml" <<EOF
name: nf4-engines
model: {path: $W/s134}
pipeline:
  - {type: quantize, method: rtn, format: nf4, skip: [lm_head]}
EOF
  for r in $(seq "$ROUNDS"); do
    for e in native torch; do
      echo "  - {type: evaluate, name: $e-$r, metrics: [speed], engine: $e, bench_prompt_tokens: 128, bench_gen_tokens: 64}" >> "$W/nf4-$dq.yaml"
    done
  done
  echo "output: {dir: $W/run-nf4-$dq}" >> "$W/nf4-$dq.yaml"
  rm -rf "$W/run-nf4-$dq"
  "$BIN" -t "$T" -q run "$W/nf4-$dq.yaml" --no-cache >/dev/null
  python3 - "$W/run-nf4-$dq/metrics.json" "$dq" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
for s in m["stages"]:
    if s["type"] != "evaluate":
        continue
    k = s["metrics"]
    print("nf4 dq=%s" % sys.argv[2], k.get("engine"), s["name"], "pp128 %.1f tok/s" % k["pp_tok_s"],
          "tg64 %.2f tok/s" % k["tg_tok_s"], "rss %.0f MiB" % (k["peak_rss_bytes"] / 2**20))
EOF
done
