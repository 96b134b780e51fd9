#!/usr/bin/env python3
"""ONNX Runtime greedy decode speed of three graphs of the same model, and llmopt's own engine
(issue 12's speed check), in alternating rounds on the same threads.

Graphs (all fp32, KV cache in/out with the names optimum uses):
  torch   torch.onnx.export of transformers' LlamaForCausalLM with past key values, as optimum
          exports it: inputs input_ids, attention_mask, position_ids, past_key_values.N.key/value
          (legacy tuple cache), outputs logits, present.N.key/value, dynamic batch / sequence /
          past axes, opset 17, eager attention (Debian's torch 1.13 has no SDPA).
  plain   `llmopt convert --to onnx` (standard ONNX ops).
  opt     `llmopt convert --to onnx --optimize` (ORT's fused com.microsoft contrib ops), when the
          llmopt binary supports it.
Each ORT run: prefill a prompt of P random token ids (fixed seed), then N greedy tokens one at a
time, feeding present -> past; decode tok/s = N / (wall time of the N single-token steps, argmax
included). llmopt: `llmopt --threads T bench MODEL -p P -n N -r 1` (its decode tok/s).
ORT sessions: intra_op_num_threads = T, inter_op_num_threads = 1, sequential execution, default
graph optimizations (ORT_ENABLE_ALL) for every graph. Each round prefills every ORT graph, then
decodes in lock step: one token of each graph in turn (rotated order per round), so that load
from other jobs on a shared machine falls on all graphs alike (--no-lockstep: each graph's N
tokens in one go); then `llmopt bench`. The table shows min / median / max over rounds and the
median of the per-round ratios opt/torch and opt/plain, from total decode time and from the
median single-step time (the latter shrugs off bursts of load).

Run with the peer venv (onnx + onnxruntime pinned in tests/peer/requirements.txt, transformers
4.44.2 on Debian's torch 1.13):

  tests/peer/.venv/bin/python bench/onnx_decode_bench.py --llmopt build/apps/llmopt/llmopt \
      --work /tmp/onnxbench --threads 2 --prompt 32 --gen 64 --rounds 5

The work directory keeps the synth model (`llmopt synth --dim 768 --layers 12 --heads 12
--kv-heads 12 --ffn 2048 --vocab 32000 --seed 1`, the 134M shape of bench/RESULTS.md) and the
exports; they are made when missing (--rebuild remakes llmopt's exports).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

SYNTH = ["--dim", "768", "--layers", "12", "--heads", "12", "--kv-heads", "12", "--ffn", "2048",
         "--vocab", "32000", "--seed", "1"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def llmopt_run(exe, *args, capture=True):
    cmd = [exe, "-q", *[str(a) for a in args]]
    p = subprocess.run(cmd, capture_output=capture, text=True)
    if p.returncode != 0:
        raise SystemExit(f"failed (exit {p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    return p.stdout


def torch_export(model_dir, out_path, opset=17):
    """torch.onnx.export of LlamaForCausalLM with past key values (legacy tuple cache), dynamic axes."""
    import torch
    import transformers
    model = transformers.LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                                          attn_implementation="eager")
    model.eval()
    cfg = model.config
    L, kv = cfg.num_hidden_layers, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    class WithPast(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, position_ids, *past):
            pkv = tuple((past[2 * i], past[2 * i + 1]) for i in range(L))
            out = self.m(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=pkv, use_cache=True, return_dict=True)
            flat = [out.logits]
            cache = out.past_key_values
            if hasattr(cache, "to_legacy_cache"):
                cache = cache.to_legacy_cache()
            for k, v in cache:
                flat += [k, v]
            return tuple(flat)

    # Trace with a past of 3 and 2 new tokens so that no size is 0 or 1 (kept symbolic).
    b, s, p = 2, 2, 3
    ids = torch.randint(0, cfg.vocab_size, (b, s))
    mask = torch.ones(b, p + s, dtype=torch.int64)
    pos = torch.arange(p, p + s).unsqueeze(0).expand(b, s).contiguous()
    past = [torch.randn(b, kv, p, hd) for _ in range(2 * L)]
    in_names = ["input_ids", "attention_mask", "position_ids"]
    out_names = ["logits"]
    axes = {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
            "position_ids": {0: "batch_size", 1: "sequence_length"},
            "logits": {0: "batch_size", 1: "sequence_length"}}
    for l in range(L):
        for w in ("key", "value"):
            in_names.append(f"past_key_values.{l}.{w}")
            out_names.append(f"present.{l}.{w}")
            axes[f"past_key_values.{l}.{w}"] = {0: "batch_size", 2: "past_sequence_length"}
            axes[f"present.{l}.{w}"] = {0: "batch_size", 2: "total_sequence_length"}
    tmp = out_path + ".tmp"
    with torch.no_grad():
        torch.onnx.export(WithPast(model), (ids, mask, pos, *past), tmp, input_names=in_names,
                          output_names=out_names, dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True)
    os.replace(tmp, out_path)


class OrtDecoder:
    def __init__(self, path, threads, cfg):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        t0 = time.perf_counter()
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.load_s = time.perf_counter() - t0
        self.L = cfg["num_hidden_layers"]
        self.kv = cfg["num_key_value_heads"]
        self.hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        self.inputs = {i.name for i in self.sess.get_inputs()}
        self.out_names = [o.name for o in self.sess.get_outputs()]

    def generate(self, prompt, n):
        """Greedy: returns (tokens, prefill seconds, decode seconds for n single-token steps)."""
        past = {f"past_key_values.{l}.{w}": np.zeros((1, self.kv, 0, self.hd), np.float32)
                for l in range(self.L) for w in ("key", "value")}
        ids = np.array([prompt], np.int64)
        total = ids.shape[1]
        pos = np.arange(total, dtype=np.int64)[None]
        out = []
        t0 = time.perf_counter()
        t1 = None
        for step in range(n + 1):
            feeds = {"input_ids": ids, "attention_mask": np.ones((1, total), np.int64), **past}
            if "position_ids" in self.inputs:
                feeds["position_ids"] = pos
            res = dict(zip(self.out_names, self.sess.run(self.out_names, feeds)))
            tok = int(np.argmax(res["logits"][0, -1]))
            if step == 0:
                t1 = time.perf_counter()
            else:
                out.append(tok)
            for l in range(self.L):
                for w in ("key", "value"):
                    past[f"past_key_values.{l}.{w}"] = res[f"present.{l}.{w}"]
            ids = np.array([[tok]], np.int64)
            pos = np.array([[total]], np.int64)
            total += 1
        t2 = time.perf_counter()
        # The first decoded token comes from the prefill's logits; the n steps feed tokens 1..n
        # (the last step's argmax is the (n+1)-th token, not kept).
        return out, t1 - t0, t2 - t1


    def start(self, prompt):
        """Prefill for lock-step decoding; returns its seconds. step() then decodes one token."""
        self.past = {f"past_key_values.{l}.{w}": np.zeros((1, self.kv, 0, self.hd), np.float32)
                     for l in range(self.L) for w in ("key", "value")}
        self.total = 0
        self.tokens = []
        t0 = time.perf_counter()
        self._run(np.array([prompt], np.int64))
        return time.perf_counter() - t0

    def step(self):
        t0 = time.perf_counter()
        self._run(np.array([[self.tokens[-1]]], np.int64))
        return time.perf_counter() - t0

    def _run(self, ids):
        s = ids.shape[1]
        feeds = {"input_ids": ids, "attention_mask": np.ones((1, self.total + s), np.int64), **self.past}
        if "position_ids" in self.inputs:
            feeds["position_ids"] = np.arange(self.total, self.total + s, dtype=np.int64)[None]
        res = dict(zip(self.out_names, self.sess.run(self.out_names, feeds)))
        self.tokens.append(int(np.argmax(res["logits"][0, -1])))
        for l in range(self.L):
            for w in ("key", "value"):
                self.past[f"past_key_values.{l}.{w}"] = res[f"present.{l}.{w}"]
        self.total += s


def llmopt_bench(exe, model, threads, prompt, gen):
    r = json.loads(llmopt_run(exe, "--threads", threads, "bench", model, "-p", prompt, "-n", gen, "-r", 1,
                              "--warmup", 1, "--json", "-"))
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llmopt", default="build/apps/llmopt/llmopt")
    ap.add_argument("--work", default="/tmp/onnxbench")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rebuild", action="store_true", help="re-export llmopt's graphs")
    ap.add_argument("--no-llmopt-engine", action="store_true")
    ap.add_argument("--json", help="write the per-round figures here")
    ap.add_argument("--no-lockstep", dest="lockstep", action="store_false",
                    help="decode each ORT graph's N tokens in one go (default: the graphs take turns per token)")
    a = ap.parse_args()
    exe = os.path.abspath(a.llmopt)
    os.makedirs(a.work, exist_ok=True)
    model = os.path.join(a.work, "m134")
    if not os.path.exists(os.path.join(model, "config.json")):
        log("synth", model)
        llmopt_run(exe, "synth", model, *SYNTH)
    cfg = json.load(open(os.path.join(model, "config.json")))

    paths = {"torch": os.path.join(a.work, "torch_export", "model.onnx"),
             "plain": os.path.join(a.work, "llmopt_plain", "model.onnx"),
             "opt": os.path.join(a.work, "llmopt_opt", "model.onnx")}
    if not os.path.exists(paths["torch"]):
        os.makedirs(os.path.dirname(paths["torch"]), exist_ok=True)
        log("torch.onnx.export ->", paths["torch"])
        t0 = time.perf_counter()
        torch_export(model, paths["torch"])
        log(f"  {time.perf_counter() - t0:.1f} s")
    help_text = subprocess.run([exe, "convert", "--help"], capture_output=True, text=True).stdout
    for name, extra in (("plain", []), ("opt", ["--optimize"])):
        if name == "opt" and "--optimize" not in help_text:
            log("llmopt convert has no --optimize: the optimized graph is skipped")
            paths.pop("opt")
            continue
        if a.rebuild or not os.path.exists(paths[name]):
            log(f"llmopt convert --to onnx {' '.join(extra)} ->", paths[name])
            t0 = time.perf_counter()
            p = subprocess.run([exe, "-q", "convert", model, os.path.dirname(paths[name]), "--to", "onnx", *extra],
                               capture_output=True, text=True)
            if p.returncode != 0:
                log(f"  failed (exit {p.returncode}): {p.stderr.strip()}; {name} skipped")
                paths.pop(name)
                continue
            log(f"  {time.perf_counter() - t0:.1f} s")

    decoders = {}
    for name, path in paths.items():
        decoders[name] = OrtDecoder(path, a.threads, cfg)
        log(f"loaded {name}: {decoders[name].load_s:.1f} s")

    rng = np.random.default_rng(0)
    prompt = rng.integers(3, cfg["vocab_size"], a.prompt).tolist()
    engines = list(decoders) + ([] if a.no_llmopt_engine else ["llmopt"])
    # Warm-up: one short generation each (first-run allocations, page cache); also checks that the
    # graphs agree on the greedy tokens.
    tokens = {}
    for name, d in decoders.items():
        tokens[name] = d.generate(prompt, 8)[0]
    log("greedy tokens (warm-up, 8):", {k: v for k, v in tokens.items()})

    dec = {e: [] for e in engines}
    pre = {e: [] for e in engines}
    full_tokens = {}
    step_med = {e: [] for e in decoders}
    for r in range(a.rounds):
        load = os.getloadavg()[0]
        ort_names = list(decoders)
        order = ort_names[r % len(ort_names):] + ort_names[:r % len(ort_names)]
        if a.lockstep:
            # The ORT graphs decode in lock step, one token each in turn, so that load from other
            # jobs on a shared machine falls on all of them alike.
            for e in order:
                pre[e].append(a.prompt / decoders[e].start(prompt))
            times = {e: [] for e in order}
            for _ in range(a.gen):
                for e in order:
                    times[e].append(decoders[e].step())
            for e in order:
                full_tokens[e] = decoders[e].tokens[:a.gen]
                dec[e].append(a.gen / sum(times[e]))
                step_med[e].append(1.0 / statistics.median(times[e]))
                log(f"round {r} {e}: decode {dec[e][-1]:.2f} tok/s, 1/median step {step_med[e][-1]:.2f} "
                    f"(load {load:.1f})")
        else:
            for e in order:
                toks, tp, td = decoders[e].generate(prompt, a.gen)
                full_tokens[e] = toks
                dec[e].append(a.gen / td)
                pre[e].append(a.prompt / tp)
                log(f"round {r} {e}: decode {dec[e][-1]:.2f} tok/s (load {os.getloadavg()[0]:.1f})")
        if "llmopt" in engines:
            res = llmopt_bench(exe, model, a.threads, a.prompt, a.gen)
            dec["llmopt"].append(res["tg_tok_s"])
            pre["llmopt"].append(res["pp_tok_s"])
            log(f"round {r} llmopt: decode {dec['llmopt'][-1]:.2f} tok/s (load {os.getloadavg()[0]:.1f})")

    same = len({tuple(v) for v in full_tokens.values()}) <= 1
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, {cpu_name()}; threads {a.threads}; "
          f"prompt {a.prompt}, decode {a.gen} tokens, {a.rounds} rounds; "
          f"loadavg now {os.getloadavg()[0]:.1f}")
    print(f"ORT graphs give the same {a.gen} greedy tokens: {same}")
    print()
    print("| engine | decode tok/s min | median | max | prefill tok/s median |")
    print("|---|---|---|---|---|")
    labels = {"torch": "ORT, torch.onnx.export graph", "plain": "ORT, llmopt plain graph",
              "opt": "ORT, llmopt optimized graph", "llmopt": "llmopt engine (`llmopt bench`)"}
    for e in engines:
        pv = [x for x in pre[e] if x is not None]
        print(f"| {labels[e]} | {min(dec[e]):.2f} | {statistics.median(dec[e]):.2f} | {max(dec[e]):.2f} | "
              f"{statistics.median(pv):.1f} |" if pv else
              f"| {labels[e]} | {min(dec[e]):.2f} | {statistics.median(dec[e]):.2f} | {max(dec[e]):.2f} | — |")
    print()
    for num, den in (("opt", "torch"), ("opt", "plain"), ("plain", "torch"), ("opt", "llmopt")):
        if num in dec and den in dec:
            ratios = [x / y for x, y in zip(dec[num], dec[den])]
            print(f"decode ratio {num}/{den}: median {statistics.median(ratios):.3f} "
                  f"(per round: {', '.join(f'{x:.3f}' for x in ratios)})")
            if num in step_med and den in step_med and step_med[num]:
                sr = [x / y for x, y in zip(step_med[num], step_med[den])]
                print(f"  by median step time: median {statistics.median(sr):.3f} "
                      f"(per round: {', '.join(f'{x:.3f}' for x in sr)})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"decode_tok_s": dec, "prefill_tok_s": pre, "decode_tok_s_median_step": step_med,
                       "same_tokens": same, "args": vars(a)}, f, indent=1)


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
