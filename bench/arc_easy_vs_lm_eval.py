#!/usr/bin/env python3
"""ARC-Easy task scoring speed: `llmopt eval --tasks arc_easy` vs lm-evaluation-harness
(`simple_evaluate`, HF backend on transformers and Debian's torch) on the same items of the same
model, in one run on the same machine and thread count (issue 11's acceptance ratio).

What is timed is each side's whole process (start to exit: model load, tokenization, scoring,
metrics), as a user would see it. Both read the same f32 weights: tinyllama-bpe-17m is exported
once to a HF directory (`llmopt convert --to hf`) in a temp dir and both sides load that export.
lm-eval gets the items through a custom task YAML over our jsonl file with the prompt template of
configs/tasks/arc_easy.yaml (as tests/peer/test_lm_eval.py does), so the requests are the same:
N documents x 4 choices. The runs alternate, llmopt first and last (llmopt, lm-eval, llmopt, ...),
so a change of machine load during the run shows up on both sides.

Run with the peer venv (tests/peer/make-venv.sh: torch 1.13, transformers 4.44.2, lm-eval 0.4.4):

  tests/peer/.venv/bin/python bench/arc_easy_vs_lm_eval.py --limit 1000 --threads 2 \
      --out /tmp/arc_easy_vs_lm_eval

It prints a JSON object and a Markdown table row and writes both under --out
(result.json, row.md). Exit 1 if the two sides' acc / acc_norm differ (they score the same
requests; tests/peer/test_lm_eval.py checks that per sample).
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LM_EVAL_TASK = """
    task: bench_arc_easy
    dataset_path: json
    dataset_kwargs:
      data_files:
        test: {data}
    test_split: test
    output_type: multiple_choice
    doc_to_text: "{{{{query}}}}\\nAnswer:"
    doc_to_choice: "{{{{choices}}}}"
    doc_to_target: "{{{{gold}}}}"
    metric_list:
      - metric: acc
      - metric: acc_norm
"""


def lm_eval_child(args):
    """One lm-eval run in this (fresh) process: the timed unit on the lm-eval side."""
    import torch
    torch.set_num_threads(args.threads)
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    out = simple_evaluate(model="hf", model_args=f"pretrained={args.model},dtype=float32",
                          tasks=["bench_arc_easy"], task_manager=TaskManager(include_path=args.include),
                          limit=args.limit, batch_size=1, device="cpu")
    r = out["results"]["bench_arc_easy"]
    Path(args.child_out).write_text(json.dumps({"acc": r["acc,none"], "acc_norm": r["acc_norm,none"]}))


def machine():
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "host": platform.node()}


def timed(cmd, env, cwd, log):
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    with open(log, "ab") as f:
        p = subprocess.run(cmd, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    wall = time.monotonic() - t0
    load1 = os.getloadavg()[0]
    if p.returncode != 0:
        sys.exit(f"failed (exit {p.returncode}): {' '.join(map(str, cmd))}; see {log}")
    return wall, (load0, load1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llmopt", default=str(REPO / "build" / "apps" / "llmopt" / "llmopt"))
    ap.add_argument("--model", default=str(REPO.parent / "shared" / "models" / "tinyllama-bpe-17m"))
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "tasks" / "arc_easy.jsonl"))
    ap.add_argument("--limit", type=int, default=1000, help="first N ARC-Easy documents (4 requests each)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="lm-eval runs; llmopt runs rounds+1 times, around them")
    ap.add_argument("--out", default=None, help="directory for result.json, row.md and the logs")
    ap.add_argument("--lm-eval-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--include", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.lm_eval_child:
        return lm_eval_child(args)

    out_dir = Path(args.out or tempfile.mkdtemp(prefix="arc_easy_vs_lm_eval-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    with tempfile.TemporaryDirectory(prefix="arc-bench-") as tmp:
        tmp = Path(tmp)
        # A private copy of the binary: the build tree may be rebuilt while this runs (~40 min).
        exe = tmp / "llmopt"
        shutil.copy2(args.llmopt, exe)
        export = tmp / "model"
        subprocess.run([exe, "-q", "convert", args.model, export, "--to", "hf"], check=True, cwd=REPO)
        include = tmp / "tasks"
        include.mkdir()
        (include / "bench_arc_easy.yaml").write_text(textwrap.dedent(LM_EVAL_TASK.format(data=args.data)))
        env["HF_DATASETS_CACHE"] = str(tmp / "hf_datasets")
        log = out_dir / "runs.log"
        log.write_text("")

        runs = []
        for i in range(2 * args.rounds + 1):
            if i % 2 == 0:
                res = tmp / f"llmopt-{i}.json"
                cmd = [exe, "-q", "-t", str(args.threads), "eval", export, "--tasks", "arc_easy",
                       "--limit", str(args.limit), "--json", res]
                wall, load = timed(cmd, env, REPO, log)
                t = json.loads(res.read_text())["tasks"]["arc_easy"]
                runs.append({"side": "llmopt", "wall_s": wall, "load": load, "acc": t["acc"], "acc_norm": t["acc_norm"]})
            else:
                res = tmp / f"lm-eval-{i}.json"
                cmd = [sys.executable, __file__, "--lm-eval-child", "--model", str(export), "--include", str(include),
                       "--limit", str(args.limit), "--threads", str(args.threads), "--child-out", str(res)]
                wall, load = timed(cmd, env, REPO, log)
                t = json.loads(res.read_text())
                runs.append({"side": "lm-eval", "wall_s": wall, "load": load, **t})
            r = runs[-1]
            print(f"[bench] {r['side']}: {r['wall_s']:.1f} s, acc {r['acc']:.4f}, acc_norm {r['acc_norm']:.4f}, "
                  f"load {r['load'][0]:.1f} -> {r['load'][1]:.1f}", file=sys.stderr, flush=True)

    ours = [r for r in runs if r["side"] == "llmopt"]
    theirs = [r for r in runs if r["side"] == "lm-eval"]
    ours_s = statistics.median(r["wall_s"] for r in ours)
    theirs_s = statistics.median(r["wall_s"] for r in theirs)
    same = all(abs(r["acc"] - theirs[0]["acc"]) < 1e-12 and abs(r["acc_norm"] - theirs[0]["acc_norm"]) < 1e-12
               for r in runs)
    import lm_eval  # noqa: F401  (version only)
    from importlib.metadata import version
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join([Path(sys.executable).name, "bench/arc_easy_vs_lm_eval.py", "--limit", str(args.limit),
                             "--threads", str(args.threads), "--rounds", str(args.rounds)]),
        "machine": machine(),
        "versions": {"lm_eval": version("lm_eval"), "transformers": version("transformers"),
                     "torch": __import__("torch").__version__},
        "limit": args.limit, "requests": 4 * args.limit, "threads": args.threads,
        "runs": runs,
        "llmopt_s": ours_s, "lm_eval_s": theirs_s, "ratio": theirs_s / ours_s,
        "scores_identical": same,
    }
    a, b = ours[0], theirs[0]
    row = (f"| {args.limit} ({4 * args.limit}) | {ours_s:.1f} s (median of {len(ours)}) | {theirs_s:.1f} s "
           f"(median of {len(theirs)}) | {result['ratio']:.1f}x | llmopt {a['acc']:.3f} / {a['acc_norm']:.3f}, "
           f"lm-eval {b['acc']:.3f} / {b['acc_norm']:.3f} |")
    (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "row.md").write_text(row + "\n")
    print(json.dumps(result, indent=2))
    print(row)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
