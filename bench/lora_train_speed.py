#!/usr/bin/env python3
"""LoRA training speed: `llmopt finetune` vs the same training written in PyTorch-Python with peft
(issue 10's throughput check), in alternating rounds on the same machine.

Both train LoRA r=8, alpha 16 on all seven projections of the same HF model, AdamW lr 2e-3,
batch B x T tokens, on the same text, with the same thread count; each reports tokens/s over the
steps after the first (the first pays for allocation / warm-up). Each round runs both, llmopt first
in odd rounds and Python first in even ones (so neither side always follows the other); the ratio
is taken within a round, so load from other jobs hits both sides of it, and the median, min and max
over rounds are printed with the 1-minute load average (/proc/loadavg) before each side.

Python runs twice per round: as a user starts it (libgomp's default spin-wait), and with
GOMP_SPINCOUNT=300, the OpenMP setting llmopt gives itself (apps/common/cli_common.cpp re-execs with
it). On a loaded machine the default spin costs torch 2-3x (2 cores, load 5: ~250 vs ~630 tok/s), so
both ratios are printed: against what a user gets, and against Python under llmopt's own setting.

Run with the peer venv (Debian's torch 1.13 + transformers 4.44.2 + peft 0.12.0):

  tests/peer/.venv/bin/python bench/lora_train_speed.py --llmopt build/apps/llmopt/llmopt \
      --model ../shared/models/tinyllama-bpe-17m --text ../shared/text/tinyshakespeare.txt \
      --threads 2 --batch 8 --seq-len 256 --steps 6 --rounds 4
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_llmopt(exe, model, text, threads, batch, seq_len, steps, tmp):
    out = tempfile.mkdtemp(prefix="llmopt-adapter-", dir=tmp)  # a fresh run each round
    subprocess.run([exe, "-q", "--threads", str(threads), "finetune", model, "--data", text, "--method", "lora",
                    "--r", "8", "--alpha", "16", "--steps", str(steps), "--batch-size", str(batch), "--seq-len",
                    str(seq_len), "--lr", "2e-3", "--schedule", "constant", "--out", out], check=True,
                   capture_output=True, text=True)
    # Per-step wall time from the events (tokens/s over steps 2..N, as the Python side measures).
    events = [json.loads(l) for l in open(os.path.join(out, "train_events.jsonl"))]
    steps_ev = [e for e in events if e.get("event") == "train_step"]
    from datetime import datetime
    t = [datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp() for e in steps_ev]
    tokens = sum(e["tokens"] for e in steps_ev[1:])
    return tokens / (t[-1] - t[0])


def run_python(model_dir, text, threads, batch, seq_len, steps):
    import torch
    import transformers
    import peft
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    ids = tok(open(text, encoding="utf-8").read()[:400000], return_tensors="pt").input_ids[0]
    model = transformers.LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                                          attn_implementation="eager")
    cfg = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    pm = peft.get_peft_model(model, cfg)
    pm.train()
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.0)
    rows = (len(ids) - 1) // seq_len
    times = []
    for s in range(steps):
        pick = torch.randint(0, rows, (batch,))
        x = torch.stack([ids[i * seq_len:i * seq_len + seq_len + 1] for i in pick.tolist()])
        logits = pm(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in pm.parameters() if p.requires_grad], 1.0)
        opt.step()
        times.append(time.perf_counter())
    return batch * seq_len * (steps - 1) / (times[-1] - times[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llmopt", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--python-side", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.python_side:
        print(run_python(a.model, a.text, a.threads, a.batch, a.seq_len, a.steps))
        return 0
    print("command:", " ".join(sys.argv), flush=True)
    print("machine:", platform.machine(), cpu_model(), f"{os.cpu_count()} CPUs", flush=True)
    ratios, ratios_spin = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            def ours_side():
                return run_llmopt(a.llmopt, a.model, a.text, a.threads, a.batch, a.seq_len, a.steps, tmp)

            def py_side(spin=None):
                # In a child process of its own, as llmopt runs: a parent that has run torch (its
                # OpenMP / OpenBLAS pools, 3 GB of tensors) slowed the llmopt child that followed.
                env = dict(os.environ)
                if spin is not None:
                    env["GOMP_SPINCOUNT"] = spin
                out = subprocess.run([sys.executable, os.path.abspath(__file__), "--python-side", "--model", a.model,
                                      "--text", a.text, "--threads", str(a.threads), "--batch", str(a.batch),
                                      "--seq-len", str(a.seq_len), "--steps", str(a.steps), "--llmopt", a.llmopt],
                                     check=True, capture_output=True, text=True, env=env).stdout
                return float(out.split()[-1])
            sides = [("llmopt", ours_side), ("python", py_side), ("python_spin300", lambda: py_side("300"))]
            k = r % len(sides)  # rotate who goes first
            sides = sides[k:] + sides[:k]
            got, load = {}, {}
            for name, fn in sides:
                load[name] = loadavg()
                got[name] = fn()
            ours, py, py3 = got["llmopt"], got["python"], got["python_spin300"]
            ratios.append(ours / py)
            ratios_spin.append(ours / py3)
            print(f"round {r + 1} ({sides[0][0]} first): llmopt {ours:.0f} tok/s (load {load['llmopt']}), "
                  f"PyTorch+peft {py:.0f} tok/s (load {load['python']}), "
                  f"PyTorch+peft with GOMP_SPINCOUNT=300 {py3:.0f} tok/s (load {load['python_spin300']}); "
                  f"ratios {ours / py:.2f} / {ours / py3:.2f}", flush=True)
    for label, rs in (("PyTorch+peft", ratios), ("PyTorch+peft with GOMP_SPINCOUNT=300", ratios_spin)):
        print(f"ratio llmopt / {label}: median {statistics.median(rs):.2f}, min {min(rs):.2f}, "
              f"max {max(rs):.2f} (threads {a.threads}, batch {a.batch} x {a.seq_len}, {a.steps} steps, "
              f"{a.rounds} rounds)")


if __name__ == "__main__":
    sys.exit(main())
