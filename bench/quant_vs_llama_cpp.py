#!/usr/bin/env python3
"""llmopt bench vs llama-bench on the same GGUF files, in alternating rounds (issue 9's speed check).

Each round runs, for every file in turn, `llmopt --threads T bench FILE -p P -n N -r R --json -`
and then `llama-bench -m FILE -p P -n N -r R -t T -o json` (llama.cpp's own benchmark; build it
for this machine, e.g. with -DGGML_NATIVE=ON), so both tools see the same minutes of a shared
machine. Prints one row per (round, file) and the per-file medians and llmopt / llama.cpp ratios
(each ratio is taken within a round, then the median over rounds). Writes every raw result to
--out as JSON lines.

--llmopt-before OLD adds a second llmopt binary (e.g. the build before a change) to every round,
run right before the new one, so that old and new see the same minutes of the machine; the summary
then shows its decode ratio too, with min / max over rounds and the number of rounds whose decode
ratio fell below --collapse (0.5 by default: a round where llmopt's decode "collapsed").
Each row also records the 1-minute load average before the pair.

  python3 bench/quant_vs_llama_cpp.py --llmopt build/apps/llmopt/llmopt \
      --llama-bench /path/to/llama-bench --rounds 4 f32.gguf q8_0.gguf q4_0.gguf ...
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def run_llmopt(exe, path, p, n, r, t):
    out = subprocess.run([exe, "-q", "--threads", str(t), "bench", path, "-p", str(p), "-n", str(n),
                          "-r", str(r), "--json", "-"], check=True, capture_output=True, text=True).stdout
    j = json.loads(out[out.index("{"):])
    return {"pp": j["pp_tok_s"], "tg": j["tg_tok_s"], "rss": j["peak_rss_bytes"],
            "model_bytes": j["model_bytes"], "kv": j["kv_cache_bytes"], "engine": j.get("engine")}


def run_llama(exe, path, p, n, r, t):
    out = subprocess.run([exe, "-m", path, "-p", str(p), "-n", str(n), "-r", str(r), "-t", str(t),
                          "-o", "json"], check=True, capture_output=True, text=True).stdout
    res = {}
    for rec in json.loads(out):
        res["pp" if rec["n_prompt"] else "tg"] = rec["avg_ts"]
    return res


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llmopt", required=True)
    ap.add_argument("--llmopt-before", help="a second llmopt binary run in the same rounds (old build)")
    ap.add_argument("--collapse", type=float, default=0.5, help="decode ratio below which a round counts as collapsed")
    ap.add_argument("--llama-bench", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-p", type=int, default=128)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("--out", default="quant_vs_llama_cpp.jsonl")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    rows = {f: [] for f in a.files}
    with open(a.out, "a") as log:
        for rnd in range(1, a.rounds + 1):
            for f in a.files:
                load = os.getloadavg()[0]
                old = run_llmopt(a.llmopt_before, f, a.p, a.n, a.r, a.t) if a.llmopt_before else None
                lo = run_llmopt(a.llmopt, f, a.p, a.n, a.r, a.t)
                ll = run_llama(a.llama_bench, f, a.p, a.n, a.r, a.t)
                rec = {"round": rnd, "file": f, "utc": time.strftime("%H:%M:%S", time.gmtime()),
                       "load1": load, "llmopt": lo, "llama_cpp": ll}
                if old:
                    rec["llmopt_before"] = old
                log.write(json.dumps(rec) + "\n")
                log.flush()
                rows[f].append(rec)
                print("round %d %-16s load %.1f  llama.cpp pp %7.1f tg %6.2f | llmopt pp %7.1f tg %6.2f "
                      "rss %.1f MiB%s" % (rnd, os.path.basename(f), load, ll["pp"], ll["tg"], lo["pp"], lo["tg"],
                                          lo["rss"] / 2**20,
                                          " | before pp %7.1f tg %6.2f" % (old["pp"], old["tg"]) if old else ""),
                      flush=True)
    print("\n| file | file MiB | llama.cpp pp%d | llmopt pp%d | pp ratio | llama.cpp tg%d | llmopt tg%d | tg ratio "
          "| llmopt peak RSS MiB | RSS / (file + KV) |" % (a.p, a.p, a.n, a.n))
    print("|---|---|---|---|---|---|---|---|---|---|")
    for f, rs in rows.items():
        size = os.path.getsize(f)
        kv = rs[0]["llmopt"]["kv"]
        rss = med([x["llmopt"]["rss"] for x in rs])
        print("| %s | %.1f | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f | %.1f | %.3f |" % (
            os.path.basename(f), size / 2**20,
            med([x["llama_cpp"]["pp"] for x in rs]), med([x["llmopt"]["pp"] for x in rs]),
            med([x["llmopt"]["pp"] / x["llama_cpp"]["pp"] for x in rs]),
            med([x["llama_cpp"]["tg"] for x in rs]), med([x["llmopt"]["tg"] for x in rs]),
            med([x["llmopt"]["tg"] / x["llama_cpp"]["tg"] for x in rs]),
            rss / 2**20, rss / (size + kv)))

    print("\n| file | binary | rounds | tg ratio median | min | max | collapsed (< %.2f) | load1 min-max |" % a.collapse)
    print("|---|---|---|---|---|---|---|---|")
    for f, rs in rows.items():
        loads = [x["load1"] for x in rs]
        for key in (["llmopt_before"] if a.llmopt_before else []) + ["llmopt"]:
            r = [x[key]["tg"] / x["llama_cpp"]["tg"] for x in rs]
            print("| %s | %s | %d | %.2f | %.2f | %.2f | %d | %.1f-%.1f |" % (
                os.path.basename(f), "before" if key == "llmopt_before" else "llmopt", len(r), med(r), min(r),
                max(r), sum(1 for v in r if v < a.collapse), min(loads), max(loads)))


if __name__ == "__main__":
    sys.exit(main())
