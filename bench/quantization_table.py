#!/usr/bin/env python3
"""The measured table of docs/quantization.md: `llmopt quantize --method rtn` into every format,
per model: bits per linear weight (quantize's log line), file size, perplexity and mean KLD vs the
f32 model (`llmopt eval --baseline`), ctx 256, llamacpp protocol, every chunk of the first 60 kB of
tinystories_val.txt. Standard library only; prints a Markdown table and the commands it ran.

  python3 bench/quantization_table.py [--llmopt build/apps/llmopt/llmopt] [--shared ../shared]
"""
import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path

FORMATS = ["f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0"]
TEXT_BYTES = 60_000
CTX = 256


def run(cmd, show=True):
    if show:
        print("$", " ".join(str(c) for c in cmd))
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(map(str, cmd))}\n{p.stderr[-3000:]}")
    return p.stdout + p.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llmopt", default="build/apps/llmopt/llmopt")
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--threads", default="2")
    a = ap.parse_args()
    sh = Path(a.shared)
    models = {
        "stories260K": [sh / "models/stories260K/stories260K.bin", "--tokenizer",
                        sh / "models/stories260K/tok512.bin"],
        "tinyllama-bpe-17m": [sh / "models/tinyllama-bpe-17m"],
    }
    tmp = Path(tempfile.mkdtemp(prefix="llmopt-qtable-"))
    text = tmp / "tinystories-60k.txt"
    data = (sh / "text/tinystories_val.txt").read_bytes()[:TEXT_BYTES]
    while data and (data[-1] & 0xC0) == 0x80:  # whole UTF-8 characters (the first 60 kB are ASCII)
        data = data[:-1]
    text.write_bytes(data)
    print(f"$ head -c {TEXT_BYTES} {sh}/text/tinystories_val.txt > {text}")
    L = [a.llmopt, "-t", a.threads]
    for name, src in models.items():
        f32 = tmp / f"{name}-f32.gguf"
        run([*L, "-q", "convert", src[0], f32, "--to", "gguf", "--type", "f32", *src[1:]])
        base = json.loads(run([*L, "-q", "eval", f32, "--data", text, "--ctx", CTX, "--json", "-"]))
        rows = [("f32 (convert)", 32.0, f32.stat().st_size, base["perplexity"], 0.0, 1.0, "")]
        for fmt in FORMATS:
            out = tmp / f"{name}-{fmt}.gguf"
            log = run([*L, "quantize", src[0], out, "--method", "rtn", "--format", fmt, *src[1:]])
            m = re.search(r"(\d+) projections as \S+, (\d+) fallback \((\w+)\), (\d+) skipped: "
                          r"([0-9.]+) bits per linear weight", log)
            bits = float(m.group(5))
            note = f"{m.group(2)} fallback ({m.group(3)})" if m.group(2) != "0" else ""
            r = json.loads(run([*L, "-q", "eval", out, "--data", text, "--ctx", CTX, "--baseline",
                                f32, "--json", "-"]))
            rows.append((fmt, bits, out.stat().st_size, r["perplexity"], r["kld_mean"],
                         r["top1_agreement"], note))
        print(f"\n{name}: ctx {CTX}, {base['chunks']} chunks, {base['tokens']} scored tokens\n")
        print("| format | bits / linear weight | file bytes | perplexity | mean KLD vs f32 | top-1 "
              "agreement | fallback |")
        print("|---|---|---|---|---|---|---|")
        for fmt, bits, size, ppl, kld, top, note in rows:
            print(f"| {fmt} | {bits:.3f} | {size:,} | {ppl:.4f} | {kld:.6f} | {100 * top:.2f}% | "
                  f"{note} |")
    print(f"\n(files in {tmp})")


if __name__ == "__main__":
    main()
