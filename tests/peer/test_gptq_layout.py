"""Peer check: GPTQ's Hugging Face safetensors layout, written and read independently of llmopt.

The layout as AutoGPTQ's QuantLinear.pack writes it and transformers/optimum/GPTQModel read it
(checkpoint_format "gptq", v1), re-implemented here in numpy from that documented layout:
  qweight i32 [in*bits/32, out]   codes packed along the input dim, input i*(32/bits)+t at bits t*bits
  qzeros  i32 [groups, out*bits/32]  (zero - 1) packed along the output dim
  scales  f16 [groups, out]
  g_idx   i32 [in]                group of each input (permuted with desc_act)
  W[o, i] = scales[g, o] * (q[i, o] - (qzeros[g, o] + 1)),  g = g_idx[i]

1. This module quantizes tinyllama-bpe-17m's block projections (asymmetric 4-bit, groups of 64,
   one act-order layer) and packs them; `llmopt convert --to hf --type f32` (llmopt's GPTQ loader
   and int-N dequantization) must write exactly the weights this module's own unpacking gives.
2. llmopt's logits on the GPTQ directory equal transformers' on the numpy-dequantized f32 model.
3. llmopt's own export (the pipeline's export stage, weights as stored) writes the GPTQ tensors
   back bit for bit, with quantization_config.
transformers' own GPTQ loader (optimum + auto-gptq's CPU QuantLinear) on llmopt's exports, and
llmopt on auto-gptq's own checkpoints: test_gptq_transformers.py.
"""
import json
import shutil

import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file as load_np, save_file as save_np
from safetensors.torch import load_file as load_torch

BITS, GROUP = 4, 64
LOGIT_TOL = 1e-4  # as test_transformers.py: f32 engines on the same f32 weights
PROJ = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
ACT_ORDER = "model.layers.1.mlp.up_proj"


def pack_rows(values, bits):
    """uint32 [n, m] -> int32 [n*bits/32, m]: row t of each word holds values[w*per + t] << (t*bits)."""
    per = 32 // bits
    n, m = values.shape
    out = np.zeros((n // per, m), dtype=np.uint32)
    for t in range(per):
        out |= values[t::per].astype(np.uint32) << np.uint32(bits * t)
    return out.view(np.int32)


def unpack_rows(words, bits):
    per = 32 // bits
    w = words.view(np.uint32)
    out = np.zeros((w.shape[0] * per, w.shape[1]), dtype=np.uint32)
    for t in range(per):
        out[t::per] = (w >> np.uint32(bits * t)) & np.uint32((1 << bits) - 1)
    return out


def gptq_dequantize(t, bits):
    """The documented v1 dequantization: [out, in] float32."""
    q = unpack_rows(t["qweight"], bits).astype(np.int64)                   # [in, out]
    z = unpack_rows(t["qzeros"].T.copy(), bits).T.astype(np.int64) + 1     # [groups, out]
    s = t["scales"].astype(np.float32)                                     # [groups, out]
    g = t["g_idx"].astype(np.int64)
    w = s[g] * (q - z[g]).astype(np.float32)                               # [in, out]
    return np.ascontiguousarray(w.T)


def quantize_asym(w, group, g_idx):
    """RTN over [min(w,0), max(w,0)] per group (GPTQ's asym grid); zero points kept in [1, 15]
    (v1 cannot store 0). Returns GPTQ tensors."""
    out, inp = w.shape
    maxq = (1 << BITS) - 1
    groups = inp // group
    scales = np.zeros((groups, out), dtype=np.float16)
    zeros = np.zeros((groups, out), dtype=np.uint32)
    for gi in range(groups):
        cols = np.nonzero(g_idx == gi)[0]
        blk = w[:, cols]
        lo = np.minimum(blk.min(1), 0)
        hi = np.maximum(blk.max(1), 0)
        s = np.maximum((hi - lo) / maxq, 1e-6).astype(np.float16)
        scales[gi] = s
        zeros[gi] = np.clip(np.round(-lo / s.astype(np.float32)), 1, maxq)
    s_full = scales[g_idx].T.astype(np.float32)            # [out, in]
    z_full = zeros[g_idx].T.astype(np.float32)
    q = np.clip(np.round(w / s_full) + z_full, 0, maxq).astype(np.uint32)
    return {
        "qweight": pack_rows(np.ascontiguousarray(q.T), BITS),
        "qzeros": np.ascontiguousarray(pack_rows(np.ascontiguousarray((zeros - 1).T), BITS).T),
        "scales": scales,
        "g_idx": g_idx.astype(np.int32),
    }


@pytest.fixture(scope="module")
def gptq_model(hf17m, tmp_path_factory):
    """(gptq_dir, dense_dir): the GPTQ checkpoint and its numpy-dequantized f32 twin."""
    root = tmp_path_factory.mktemp("gptq")
    gptq_dir, dense_dir = root / "gptq", root / "dense"
    gptq_dir.mkdir()
    dense_dir.mkdir()
    src = {k: v.float().numpy() for k, v in load_torch(str(hf17m / "model.safetensors")).items()}
    cfg = json.loads((hf17m / "config.json").read_text())
    rng = np.random.default_rng(0)
    gptq_tensors, dense = {}, {}
    for name, w in src.items():
        module = name[: -len(".weight")]
        if name.endswith(".weight") and any(module.endswith(p) for p in PROJ):
            inp = w.shape[1]
            g_idx = np.arange(inp) // GROUP
            if module == ACT_ORDER:
                g_idx = g_idx[rng.permutation(inp)]  # desc_act: groups follow a column order
            t = quantize_asym(w, GROUP, g_idx)
            for k, v in t.items():
                gptq_tensors[f"{module}.{k}"] = v
            dense[name] = gptq_dequantize(t, BITS)
        else:
            gptq_tensors[name] = w.astype(np.float32)
            dense[name] = w.astype(np.float32)
    save_np(gptq_tensors, str(gptq_dir / "model.safetensors"), metadata={"format": "pt"})
    save_np(dense, str(dense_dir / "model.safetensors"), metadata={"format": "pt"})
    dense_cfg = dict(cfg, torch_dtype="float32")
    (dense_dir / "config.json").write_text(json.dumps(dense_cfg, indent=2))
    gptq_cfg = dict(dense_cfg, quantization_config={
        "quant_method": "gptq", "bits": BITS, "group_size": GROUP, "desc_act": True, "sym": False,
        "checkpoint_format": "gptq"})
    (gptq_dir / "config.json").write_text(json.dumps(gptq_cfg, indent=2))
    for d in (gptq_dir, dense_dir):
        shutil.copy(hf17m / "tokenizer.json", d / "tokenizer.json")
    return gptq_dir, dense_dir


def test_llmopt_dequantizes_gptq_as_documented(llmopt, gptq_model, tmp_path):
    gptq_dir, dense_dir = gptq_model
    out = tmp_path / "llmopt-dense"
    llmopt.run("convert", gptq_dir, out, "--to", "hf", "--type", "f32")
    ours = load_np(str(out / "model.safetensors"))
    ref = load_np(str(dense_dir / "model.safetensors"))
    checked = 0
    for name, w in ref.items():
        if any(name.endswith(p + ".weight") for p in PROJ):
            assert ours[name].dtype == np.float32
            assert np.array_equal(ours[name], w), name  # s * (q - z) is exact in f32
            checked += 1
    assert checked == 6 * len(PROJ)


def test_llmopt_logits_on_gptq_match_transformers_on_dequantized(llmopt, gptq_model, tmp_path):
    gptq_dir, dense_dir = gptq_model
    res = llmopt.logits(gptq_dir, tmp_path, "--text", "Once upon a time, there was a little girl named Lily.")
    ids = res["ids"]
    mine = np.array([p["logits"] for p in res["positions"]], dtype=np.float64)
    model = transformers.LlamaForCausalLM.from_pretrained(
        str(dense_dir), torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        ref = model(torch.tensor([ids], dtype=torch.long)).logits[0].double().numpy()
    diff = np.abs(mine - ref).max()
    print(f"GPTQ 17M: {len(ids)} tokens, max |logit diff| vs transformers on dequantized weights = {diff:.3g}")
    assert diff <= LOGIT_TOL
    assert (mine.argmax(1) == ref.argmax(1)).all()


def test_llmopt_export_writes_gptq_tensors_back_bit_for_bit(llmopt, gptq_model, tmp_path):
    gptq_dir, _ = gptq_model
    recipe = tmp_path / "export.yaml"
    recipe.write_text(
        "name: gptq_export\n"
        f"model: {{path: {gptq_dir}}}\n"
        f"output: {{dir: {tmp_path / 'run'}, cache: false}}\n"
        "pipeline:\n"
        "  - {type: export, name: export, formats: [hf], dtype: f32, basename: m}\n")
    llmopt.run("run", recipe)
    out = tmp_path / "run" / "artifacts" / "m-hf"
    cfg = json.loads((out / "config.json").read_text())
    q = cfg["quantization_config"]
    assert (q["quant_method"], q["bits"], q["group_size"], q["desc_act"], q["sym"], q["checkpoint_format"]) == \
        ("gptq", BITS, GROUP, True, False, "gptq")
    ours = load_np(str(out / "model.safetensors"))
    ref = load_np(str(gptq_dir / "model.safetensors"))
    checked = 0
    for name, t in ref.items():
        if name.rsplit(".", 1)[-1] in ("qweight", "qzeros", "scales", "g_idx"):
            assert ours[name].dtype == t.dtype, name
            assert np.array_equal(ours[name], t), name
            checked += 1
    assert checked == 4 * 6 * len(PROJ)
