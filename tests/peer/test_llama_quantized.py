"""Peer check: GGUFs written by `llmopt quantize --method rtn` in llama.cpp and in gguf-py.

For stories260K (llama2.c .bin + tok512.bin) and tinyllama-bpe-17m (HF dir), `llmopt quantize
MODEL OUT.gguf --method rtn --format q8_0|q4_0` (default --fallback f16, default --skip lm_head)
writes the packed projections as they are. Each file is checked four ways:

(a) llama.cpp loads it and `llama-perplexity -c CTX -b CTX -ctk f32 -ctv f32 --chunks N` on the
    first TEXT_BYTES of tinystories_val.txt (the settings of test_llama_perplexity.py) gives a
    "Final estimate" PPL within 0.5% of `llmopt eval OUT.gguf --ctx CTX --limit N`. llama.cpp's CPU
    kernels multiply Q4_0/Q8_0 weights with activations rounded to Q8_0 blocks (F16 weights with f16
    activations) while llmopt keeps f32 activations; measured, that moves PPL by 0.003-0.09% here
    (stories260K, 8 chunks: q8_0 3.5811 vs 3.5839, q4_0 3.8445 vs 3.8410; 17M, 4 chunks: q8_0
    37.4048 vs 37.4060, q4_0 37.5283 vs 37.5172), well inside 0.5%, so the issue's 0.5% is kept.
(b) the `gguf` package reads the file and `gguf.quants.dequantize` of every Q4_0/Q8_0 tensor (and
    the F16 fallback tensors) equals, bit for bit, what llmopt dequantizes: `llmopt convert OUT.gguf
    --to hf --type f32`, read with safetensors, q/k rows permuted to GGUF's interleaved rotary
    layout as llama.cpp's converter does. Exact because both compute f32(f16 d) * f32(q) once per
    value (Q4_0: q = nibble - 8; Q8_0: q = int8).
(c) every tensor's type is listed (printed) and is as the rule says: 1-D norms and the token
    embedding (not a projection) F32; a projection whose rows (ggml ne[0], the input dimension) are
    whole 32-value blocks in the requested format, every other projection in the fallback type
    (F16). stories260K: the five ffn_down (rows of 172) are F16, all else q4_0/q8_0; 17M: none.
(d) KL divergence vs the f32 model, measured by llama.cpp (`--kl-divergence-base` of the f32 GGUF,
    then `--kl-divergence` of each file) and by `llmopt eval --baseline`: printed for every file,
    not compared with each other: llama.cpp's Q8_0 activation rounding is a large share of a q8_0
    file's small KLD (stories260K q8_0: 0.000406 llama.cpp vs 0.000226 llmopt; 17M q8_0: 0.000017
    vs 0.000004), a small one of q4_0's (0.077106 vs 0.076875; 0.001283 vs 0.001293).
    For the 17M model it is set next to llama.cpp's own RTN, `llama-quantize --pure` of the same f32
    GGUF to Q4_0. Plain `--pure` also rounds token_embd.weight (the tied classifier) to Q4_0, which
    llmopt quantize leaves F32 (it packs projections only), so the files differ by more than the
    rounding rule: measured mean KLD 0.001283 (ours) vs 0.004007 (--pure), 3.1x. That figure is
    printed, not asserted. The like-for-like file is `llama-quantize --pure --token-embedding-type
    f32 ... Q4_0`: both use ggml's reference Q4_0 rounding (quantize_row_q4_0_ref), so the mean KLD
    must be within 5% (the issue's tolerance; measured identical to all 6 printed digits) and, the
    stronger statement, every tensor's bytes are identical. stories260K has no llama-quantize Q4_0
    counterpart: llama-quantize refuses its 172-column ffn_down rows for Q4_0 (with or without
    --pure, --tensor-type ffn_down=f16 does not help), so only its figures are printed.
"""
import json
import re
import subprocess
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize
from safetensors.numpy import load_file

from conftest import utf8_prefix

from llama_tools import QUANTIZE, THREADS, grab, llama_perplexity, llama_tools, run_tool  # noqa: F401 (fixture)

PPL_RTOL = 0.005
KLD_VS_LLAMA_QUANTIZE_RTOL = 0.05
TEXT_BYTES = 60_000
FORMATS = ["q8_0", "q4_0"]
QK = 32  # values per block of q8_0 and q4_0
GT = gguf.GGMLQuantizationType

# Same settings as test_llama_perplexity.py.
MODELS = {
    "stories260K": dict(ctx=256, chunks=8),
    "17m": dict(ctx=256, chunks=4),
}

PER_LAYER = {  # GGUF name suffix -> HF name suffix (the projections)
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def hf_name(gguf_name):
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    if gguf_name == "output.weight":
        return "lm_head.weight"
    _, layer, suffix = gguf_name.split(".", 2)
    norms = {"attn_norm.weight": "input_layernorm.weight",
             "ffn_norm.weight": "post_attention_layernorm.weight"}
    return f"model.layers.{layer}.{PER_LAYER.get(suffix) or norms[suffix]}"


def is_projection(gguf_name):
    return gguf_name.split(".", 2)[-1] in PER_LAYER


def permute_rope(w, heads):
    """HF q/k rows [heads * d] with rotary halves (i, i + d/2) -> GGUF interleaved (2i, 2i+1)."""
    rows = w.shape[0]
    return w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class Setup:
    """Per model: text, f32 GGUF, llama.cpp's base log-probs, and llmopt's q8_0/q4_0 GGUFs."""

    def __init__(self, name, llmopt, shared, hf17m, stories_bin, stories_tok, tmp):
        cfg = MODELS[name]
        self.name, self.ctx, self.chunks, self.tmp, self.llmopt = name, cfg["ctx"], cfg["chunks"], tmp, llmopt
        self.text = tmp / "tinystories.txt"
        self.text.write_bytes(utf8_prefix((shared / "text" / "tinystories_val.txt").read_bytes(),
                                          TEXT_BYTES))
        self.src = [stories_bin, "--tokenizer", stories_tok] if name == "stories260K" else [hf17m]
        self.f32 = tmp / f"{name}-f32.gguf"
        llmopt.run("convert", self.src[0], self.f32, "--to", "gguf", "--type", "f32", *self.src[1:])
        self.kld_base = tmp / f"{name}-f32.kld"
        llama_perplexity(self.f32, self.ctx, "-f", self.text, "--chunks", self.chunks,
                         "--kl-divergence-base", self.kld_base)
        self.gguf, self.bits = {}, {}
        for fmt in FORMATS:
            out = tmp / f"{name}-{fmt}.gguf"
            # Without -q: the last log line states the bits per linear weight.
            p = subprocess.run([str(llmopt.exe), "quantize", str(self.src[0]), str(out), "--method",
                                "rtn", "--format", fmt, *[str(a) for a in self.src[1:]]],
                               capture_output=True, text=True, timeout=900)
            assert p.returncode == 0, f"llmopt quantize failed:\n{p.stderr}"
            self.bits[fmt] = grab(r"([0-9.]+) bits per linear weight", p.stderr + p.stdout,
                                  "bits per linear weight")
            self.gguf[fmt] = out

    def llmopt_eval(self, model, *args):
        out = self.tmp / f"eval-{len(list(self.tmp.glob('eval-*')))}.json"
        self.llmopt.run("eval", model, "--data", self.text, "--ctx", self.ctx, "--limit",
                        self.chunks, "--json", out, *args)
        return json.loads(out.read_text())

    def llama_kld(self, model):
        log = llama_perplexity(model, self.ctx, "--kl-divergence", "--kl-divergence-base",
                               self.kld_base)
        return (grab(r"Mean\s+KLD:\s+([-0-9.]+)", log, "Mean KLD"),
                grab(r"Same top p:\s+([0-9.]+)", log, "Same top p") / 100.0)


@pytest.fixture(scope="module", params=list(MODELS))
def setup(request, llama_tools, llmopt, shared, hf17m, stories_bin, stories_tok, tmp_path_factory):
    name = request.param
    return Setup(name, llmopt, shared, hf17m, stories_bin, stories_tok, tmp_path_factory.mktemp(name))


@pytest.mark.parametrize("fmt", FORMATS)
def test_llama_perplexity_matches_llmopt_eval(setup, fmt):
    model = setup.gguf[fmt]
    log = llama_perplexity(model, setup.ctx, "-f", setup.text, "--chunks", setup.chunks)
    # llama.cpp loaded the file with our block types, as written.
    types = dict(re.findall(r"llama_model_loader: - type\s+(\w+):\s+(\d+) tensors", log))
    assert fmt in types, f"llama.cpp saw no {fmt} tensors: {types}"
    theirs = grab(r"Final estimate: PPL = ([0-9.]+)", log, "final PPL")
    r = setup.llmopt_eval(model)
    rel = abs(r["perplexity"] - theirs) / theirs
    print(f"{setup.name} {fmt} ({setup.bits[fmt]:.3f} bits/linear weight, {model.stat().st_size} "
          f"bytes, llama.cpp types {types}): llama-perplexity PPL {theirs:.4f}, llmopt eval "
          f"{r['perplexity']:.4f}, rel diff {rel:.2e}")
    assert r["chunks"] == setup.chunks
    assert rel <= PPL_RTOL


@pytest.mark.parametrize("fmt", FORMATS)
def test_gguf_package_dequantizes_like_llmopt(setup, fmt):
    model = setup.gguf[fmt]
    hf_dir = setup.tmp / f"{fmt}-deq-hf"
    setup.llmopt.run("convert", model, hf_dir, "--to", "hf", "--type", "f32")
    cfg = json.loads((hf_dir / "config.json").read_text())
    ours = load_file(str(hf_dir / "model.safetensors"))
    reader = gguf.GGUFReader(str(model))
    checked = {}
    for t in reader.tensors:
        if t.tensor_type not in (GT.Q4_0, GT.Q8_0, GT.F16):
            continue
        got = dequantize(t.data, t.tensor_type).astype(np.float32)
        ref = ours[hf_name(t.name)].astype(np.float32)
        if t.name.endswith("attn_q.weight"):
            ref = permute_rope(ref, cfg["num_attention_heads"])
        elif t.name.endswith("attn_k.weight"):
            ref = permute_rope(ref, cfg["num_key_value_heads"])
        assert got.shape == ref.shape, f"{t.name}: {got.shape} vs {ref.shape}"
        bad = int((got != ref).sum())
        assert bad == 0, (f"{t.name} ({t.tensor_type.name}): {bad} of {ref.size} values differ, "
                          f"max |diff| {np.abs(got - ref).max():.3g}")
        checked[t.tensor_type.name] = checked.get(t.tensor_type.name, 0) + 1
    print(f"{setup.name} {fmt}: gguf.quants.dequantize == llmopt's f32 export, bit for bit: {checked}")
    assert checked.get(fmt.upper(), 0) > 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_tensor_types_and_fallback(setup, fmt):
    reader = gguf.GGUFReader(str(setup.gguf[fmt]))
    want_q = GT[fmt.upper()]
    listing, fallback = [], []
    for t in reader.tensors:
        listing.append(f"{t.name} {t.tensor_type.name} {list(t.shape)}")
        if is_projection(t.name):
            whole = int(t.shape[0]) % QK == 0  # ggml ne[0]: the row length (input features)
            want = want_q if whole else GT.F16
            if not whole:
                fallback.append(t.name)
        else:
            want = GT.F32  # norms, token_embd (tied classifier: no output.weight here)
        assert t.tensor_type == want, f"{t.name} {list(t.shape)}: {t.tensor_type.name}, expected {want.name}"
    ft = reader.get_field("general.file_type").contents()
    print(f"{setup.name} {fmt}: general.file_type {ft}; fallback (F16) {fallback}\n  " +
          "\n  ".join(listing))
    if setup.name == "stories260K":
        assert fallback == [f"blk.{i}.ffn_down.weight" for i in range(5)]
    else:
        assert fallback == []


def test_kl_divergence_next_to_llama_quantize(setup):
    figures = {}
    for fmt in FORMATS:
        kld, top = setup.llama_kld(setup.gguf[fmt])
        r = setup.llmopt_eval(setup.gguf[fmt], "--baseline", setup.f32)
        figures[fmt] = kld
        print(f"{setup.name} llmopt rtn {fmt}: llama.cpp mean KLD {kld:.6f}, same top "
              f"{100 * top:.3f}%; llmopt eval --baseline kld_mean {r['kld_mean']:.6f}, "
              f"top1_agreement {100 * r['top1_agreement']:.3f}%")
        assert kld > 0
    if setup.name != "17m":
        return  # llama-quantize cannot make a Q4_0 of stories260K (172-column rows)
    pure = setup.tmp / "17m-llama-quantize-pure-Q4_0.gguf"
    run_tool(QUANTIZE, "--pure", setup.f32, pure, "Q4_0", THREADS)
    like = setup.tmp / "17m-llama-quantize-pure-Q4_0-embd-f32.gguf"
    run_tool(QUANTIZE, "--pure", "--token-embedding-type", "f32", setup.f32, like, "Q4_0", THREADS)
    kld_pure, _ = setup.llama_kld(pure)
    kld_like, _ = setup.llama_kld(like)
    ours = figures["q4_0"]
    print(f"17m Q4_0 mean KLD (llama.cpp): llmopt rtn {ours:.6f}; llama-quantize --pure {kld_pure:.6f} "
          f"(token_embd Q4_0 too, {pure.stat().st_size} bytes); llama-quantize --pure "
          f"--token-embedding-type f32 {kld_like:.6f} ({like.stat().st_size} bytes; ours "
          f"{setup.gguf['q4_0'].stat().st_size})")
    assert abs(ours - kld_like) / kld_like <= KLD_VS_LLAMA_QUANTIZE_RTOL
    a = {t.name: t for t in gguf.GGUFReader(str(setup.gguf["q4_0"])).tensors}
    b = {t.name: t for t in gguf.GGUFReader(str(like)).tensors}
    assert set(a) == set(b)
    for k in a:
        assert a[k].tensor_type == b[k].tensor_type, k
        assert np.array_equal(np.asarray(a[k].data), np.asarray(b[k].data)), f"{k}: bytes differ"
