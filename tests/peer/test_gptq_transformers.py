"""Peer check: the real GPTQ consumer code reads llmopt's GPTQ exports, and llmopt reads the producer's.

Consumer: transformers 4.44's own loader, `AutoModelForCausalLM.from_pretrained(dir, device_map="cpu")`
on a directory whose config.json has quantization_config {quant_method: gptq}: GptqHfQuantizer ->
optimum 1.22's GPTQQuantizer.convert_model -> auto-gptq 0.7.1's QuantLinear (qlinear_cuda_old, or
qlinear_cuda where desc_act needs g_idx), built without its CUDA extensions (make-venv.sh,
BUILD_CUDA_EXT=0): their torch fallback unpacks qweight/qzeros/g_idx and runs `x @ W` on CPU.
Exllama is switched off at load (`GPTQConfig(use_exllama=False)`, a load-time attribute; its kernels
are CUDA-only and optimum refuses it for CPU modules).

Producer: auto-gptq's own GPTQ (`BaseGPTQForCausalLM.quantize`, its Hessian, act-order, pack and
`save_quantized`). It hard-codes CUDA for device placement only, so this test builds the wrapper
from a transformers model directly (its `from_pretrained` refuses without CUDA), points its layer
device at the CPU and makes `torch.cuda.synchronize` a no-op; the algorithm and packing are theirs.
torch 1.13's CPU matmul has no float16, so auto-gptq quantizes an f32 model, then `model.half()`
before `save_quantized` gives the usual f16 scales (the layout's dtype) as an fp16 model would;
the `-f32` cases skip it and keep the f32 scales auto-gptq writes for an f32 model.

1. llmopt's exports (`llmopt quantize ... --to hf`: int4 g128 sym/asym, act-order, int8 per channel
   and g128; tinyllama-bpe-17m at g64, since its FFN rows of 704 are not whole groups of 128) load in
   transformers; the consumer's dequantized weights equal llmopt's (`convert --type f32`) bit for bit
   and the logits agree within LOGIT_TOL.
2. auto-gptq's checkpoints (int4 g128 sym/asym with and without desc_act, int8 per channel and g128
   desc_act; tinyllama-bpe-17m int4 g64 asym desc_act) load in llmopt with the same weights and
   logits as in transformers; llmopt's export of them writes the same GPTQ tensors back bit for bit,
   which transformers loads again (this covers llmopt's writer with a permuted g_idx, which its own
   act-order, static groups, never produces). With f32 scales the same holds (llmopt keeps them f32).
3. auto-gptq's own file names (no `model_file_base_name`: gptq_model-4bit-128g.safetensors, and
   quantize_config.json as the only quantization config, as older auto-gptq writes): llmopt loads
   that directory with the weights and logits transformers gets from the same bytes under the name
   it looks for (model.safetensors); a second *.safetensors makes it ambiguous: exit 2.

Tolerance: s·(q − z) with an f16 scale (11-bit significand) and an integer |q − z| < 2^8 is exact in
f32, so both sides hold bit-identical f32 weights (checked); with an f32 scale it is one f32 rounding
of the exact product on both sides (auto-gptq: `scales * (weight - zeros)` in f32), so bit-identical
too. The logits then differ only by f32 summation order, the case of test_transformers.py's dense
f32 comparison: LOGIT_TOL = 1e-4.
"""
import contextlib
import json
import subprocess

import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file as load_np

import auto_gptq  # noqa: F401  (the consumer must be installed: make-venv.sh)
import optimum.gptq  # noqa: F401

LOGIT_TOL = 1e-4  # f32 engines on bit-identical f32 weights (module docstring)
SYNTH = dict(dim=256, ffn=768, layers=2, heads=4, kv_heads=2, vocab=512)
SYNTH_IDS = list(range(3, 300, 17))  # 18 tokens inside the synth vocabulary
TEXT = "Once upon a time, there was a little girl named Lily. She liked to play outside in the sun."
PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GPTQ_SUFFIXES = ("qweight", "qzeros", "scales", "g_idx")


# ---------------------------------------------------------------------------------------- helpers

def consumer_load(d):
    """transformers' own GPTQ path on CPU in f32; asserts the modules really are auto-gptq's."""
    bits = json.loads((d / "config.json").read_text())["quantization_config"]["bits"]
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(d), quantization_config=transformers.GPTQConfig(bits=bits, use_exllama=False),
        device_map="cpu", torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    kinds = {type(m).__module__ for _, m in quant_linears(model)}
    assert kinds and all(k.startswith("auto_gptq.nn_modules.qlinear.") for k in kinds), kinds
    assert len(quant_linears(model)) == len(PROJ) * model.config.num_hidden_layers
    return model


def quant_linears(model):
    return [(n, m) for n, m in model.named_modules() if type(m).__name__ == "QuantLinear"]


def consumer_weights(model):
    """{'<module>.weight': W [out, in] f32} as auto-gptq's forward dequantizes it: I @ W^T is exact."""
    out = {}
    with torch.no_grad():
        for name, m in quant_linears(model):
            eye = torch.eye(m.infeatures, dtype=torch.float32)
            out[f"{name}.weight"] = m(eye).T.contiguous().numpy()
    return out


def consumer_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids], dtype=torch.long)).logits[0].double().numpy()


def llmopt_logits(llmopt, d, tmp, ids=None, text=None):
    args = ("--ids", ",".join(map(str, ids))) if ids is not None else ("--text", text)
    res = llmopt.logits(d, tmp, *args)
    if ids is not None:
        assert res["ids"] == ids
    return res["ids"], np.array([p["logits"] for p in res["positions"]], dtype=np.float64)


def llmopt_weights(llmopt, d, tmp):
    out = tmp / f"dense-{d.name}"
    llmopt.run("convert", d, out, "--to", "hf", "--type", "f32")
    return load_np(str(out / "model.safetensors"))


def check_same_model(llmopt, d, tmp, label, ids=None, text=None, consumer_dir=None):
    """Consumer vs llmopt on one GPTQ directory (or the consumer on `consumer_dir`, the same bytes
    under the names transformers looks for): weights bit for bit, logits within LOGIT_TOL."""
    model = consumer_load(consumer_dir or d)
    theirs = consumer_weights(model)
    ours = llmopt_weights(llmopt, d, tmp)
    for name, w in theirs.items():
        assert ours[name].dtype == np.float32, name
        assert ours[name].shape == w.shape, name
        assert np.array_equal(ours[name], w), f"{label}: {name} dequantizes differently"
    ids, mine = llmopt_logits(llmopt, d, tmp, ids=ids, text=text)
    ref = consumer_logits(model, ids)
    diff = np.abs(mine - ref).max()
    print(f"{label}: {len(ids)} tokens, {len(theirs)} GPTQ modules ({sorted({type(m).__module__.rsplit('.', 1)[-1] for _, m in quant_linears(model)})}), "
          f"max |logit diff| llmopt vs transformers+auto-gptq = {diff:.3g} (max |logit| {np.abs(ref).max():.3g})")
    assert diff <= LOGIT_TOL, label
    assert (mine.argmax(1) == ref.argmax(1)).all(), label
    return ids, ref


def gptq_config(d):
    return json.loads((d / "config.json").read_text())["quantization_config"]


@pytest.fixture(scope="module")
def synth(llmopt, tmp_path_factory):
    """A random Llama whose every projection row is whole groups of 128 (dims 256 and 768)."""
    d = tmp_path_factory.mktemp("synth") / "synth"
    s = SYNTH
    llmopt.run("synth", d, "--dim", s["dim"], "--ffn", s["ffn"], "--layers", s["layers"],
               "--heads", s["heads"], "--kv-heads", s["kv_heads"], "--vocab", s["vocab"], "--seed", 3)
    return d


@pytest.fixture(scope="module")
def calibration(shared, tmp_path_factory):
    """The first 50 kB of tinystories_val.txt (llmopt's calibration file for the GPTQ exports)."""
    f = tmp_path_factory.mktemp("calib") / "calib.txt"
    f.write_bytes((shared / "text" / "tinystories_val.txt").read_bytes()[:50_000])
    return f


# ------------------------------------------------------------------ 1. llmopt writes, transformers reads

LLMOPT_CASES = {
    # id: (model, format, group, asym, method, act_order)
    "synth-int4-g128-sym-rtn": ("synth", "int4", 128, False, "rtn", False),
    "synth-int4-g128-asym-rtn": ("synth", "int4", 128, True, "rtn", False),
    "synth-int4-g128-asym-gptq-actorder": ("synth", "int4", 128, True, "gptq", True),
    "synth-int8-perchannel-rtn": ("synth", "int8", -1, False, "rtn", False),
    "synth-int8-g128-asym-gptq": ("synth", "int8", 128, True, "gptq", False),
    "17m-int4-g64-sym-gptq": ("17m", "int4", 64, False, "gptq", False),
    "17m-int4-g64-asym-gptq-actorder": ("17m", "int4", 64, True, "gptq", True),
    "17m-int8-perchannel-gptq": ("17m", "int8", -1, False, "gptq", False),
}


@pytest.mark.parametrize("case", list(LLMOPT_CASES))
def test_transformers_loads_llmopt_gptq_export(llmopt, synth, hf17m, calibration, tmp_path, case):
    model, fmt, group, asym, method, act_order = LLMOPT_CASES[case]
    src = synth if model == "synth" else hf17m
    out = tmp_path / "gptq"
    args = ["quantize", src, out, "--to", "hf", "--format", fmt, "--group-size", group, "--method", method]
    if asym:
        args.append("--asym")
    if method == "gptq":
        args += ["--calibration", calibration, "--calibration-samples", 8, "--calibration-seq-len", 64]
    if act_order:
        args.append("--act-order")
    llmopt.run(*args)
    q = gptq_config(out)
    assert (q["quant_method"], q["bits"], q["group_size"], q["sym"]) == ("gptq", int(fmt[3:]), group, not asym)
    # desc_act / static_groups as auto-gptq's fasterquant means them (actorder; grids fitted before the
    # column sweep, which leaves g_idx contiguous). llmopt's act-order fits every grid up front, and a
    # whole-row grid is the same either way; RTN is no GPTQ sweep: false.
    assert q["desc_act"] == act_order, q
    assert q["static_groups"] == (method == "gptq" and (act_order or group == -1)), q
    if model == "synth":
        check_same_model(llmopt, out, tmp_path, case, ids=SYNTH_IDS)
    else:
        check_same_model(llmopt, out, tmp_path, case, text=TEXT)


# ------------------------------------------------------------------ 2. auto-gptq writes, llmopt reads

@contextlib.contextmanager
def auto_gptq_on_cpu():
    """auto-gptq's quantize places layers on a hard-coded cuda:0 and calls torch.cuda.synchronize():
    device plumbing only; pointed at the CPU for the duration."""
    import auto_gptq.modeling._base as base
    saved = base.CUDA_0, torch.cuda.synchronize
    base.CUDA_0 = torch.device("cpu")
    torch.cuda.synchronize = lambda *a, **k: None
    try:
        yield
    finally:
        base.CUDA_0, torch.cuda.synchronize = saved


def auto_gptq_quantize(src, out, bits, group, desc_act, sym, examples, half=True, base_name="model"):
    """base_name "model": model.safetensors, as transformers looks for; None: auto-gptq's default."""
    from auto_gptq import BaseQuantizeConfig
    from auto_gptq.modeling.llama import LlamaGPTQForCausalLM
    qc = BaseQuantizeConfig(bits=bits, group_size=group, desc_act=desc_act, sym=sym,
                            model_file_base_name=base_name)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(src), torch_dtype=torch.float32, attn_implementation="eager")
    hf.eval()
    hf.seqlen = hf.config.max_position_embeddings
    wrapped = LlamaGPTQForCausalLM(hf, False, qc)  # what its from_pretrained returns
    torch.manual_seed(0)
    with auto_gptq_on_cpu():
        wrapped.quantize(examples, use_cuda_fp16=False)
    if half:
        wrapped.model.half()  # f16 scales and tensors, as from an fp16 model (module docstring)
    wrapped.save_quantized(str(out), use_safetensors=True)
    (out / "tokenizer.json").write_bytes((src / "tokenizer.json").read_bytes())


def examples_from_ids(rows):
    return [{"input_ids": torch.tensor(r, dtype=torch.long),
             "attention_mask": torch.ones(len(r), dtype=torch.long)} for r in rows]


AUTO_GPTQ_CASES = {
    # id: (model, bits, group, desc_act, sym, scales dtype)
    "synth-int4-g128-sym": ("synth", 4, 128, False, True, np.float16),
    "synth-int4-g128-asym-descact": ("synth", 4, 128, True, False, np.float16),
    "synth-int4-g128-sym-descact": ("synth", 4, 128, True, True, np.float16),
    "synth-int8-perchannel-sym": ("synth", 8, -1, False, True, np.float16),
    "synth-int8-g128-asym-descact": ("synth", 8, 128, True, False, np.float16),
    "17m-int4-g64-asym-descact": ("17m", 4, 64, True, False, np.float16),
    "synth-int4-g128-asym-descact-f32": ("synth", 4, 128, True, False, np.float32),
    "17m-int4-g64-sym-f32": ("17m", 4, 64, False, True, np.float32),
}


def calibration_rows(model, hf17m, shared):
    if model == "synth":
        rng = np.random.default_rng(1)
        return [rng.integers(3, SYNTH["vocab"], 64).tolist() for _ in range(8)]
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(hf17m / "tokenizer.json"))
    text = (shared / "text" / "tinystories_val.txt").read_text(encoding="utf-8")[:50_000]
    ids = tok.encode(text).ids
    return [ids[i * 64:(i + 1) * 64] for i in range(8)]


@pytest.mark.parametrize("case", list(AUTO_GPTQ_CASES))
def test_llmopt_loads_auto_gptq_checkpoint(llmopt, synth, hf17m, shared, tmp_path, case):
    model, bits, group, desc_act, sym, scales_dtype = AUTO_GPTQ_CASES[case]
    src = synth if model == "synth" else hf17m
    rows = calibration_rows(model, hf17m, shared)
    ckpt = tmp_path / "auto-gptq"
    auto_gptq_quantize(src, ckpt, bits, group, desc_act, sym, examples_from_ids(rows),
                       half=scales_dtype == np.float16)

    q = gptq_config(ckpt)
    assert (q["quant_method"], q["bits"], q["group_size"], q["desc_act"], q["sym"]) == \
        ("gptq", bits, group, desc_act, sym)
    theirs = load_np(str(ckpt / "model.safetensors"))
    g_idx = theirs["model.layers.0.self_attn.q_proj.g_idx"]
    in_features = g_idx.shape[0]
    trivial = np.arange(in_features) // (group if group > 0 else in_features)
    # desc_act must really permute the groups here, or the test would not exercise g_idx.
    assert (not np.array_equal(g_idx, trivial)) == desc_act
    assert theirs["model.layers.0.self_attn.q_proj.scales"].dtype == scales_dtype
    if scales_dtype == np.float32:  # f32 scales f16 cannot hold, or the case would not test keeping them
        sc = theirs["model.layers.0.self_attn.q_proj.scales"]
        assert not np.array_equal(sc.astype(np.float16).astype(np.float32), sc)

    kw = dict(ids=SYNTH_IDS) if model == "synth" else dict(text=TEXT)
    _, ref = check_same_model(llmopt, ckpt, tmp_path, f"auto-gptq {case}", **kw)

    # llmopt's export of that checkpoint: the same GPTQ tensors and config, loadable again (the dense
    # tensors in the checkpoint's own float type, so the logits compare within LOGIT_TOL).
    dense_type = "f16" if scales_dtype == np.float16 else "f32"
    recipe = tmp_path / "export.yaml"
    recipe.write_text(
        "name: gptq_reexport\n"
        f"model: {{path: {ckpt}}}\n"
        f"output: {{dir: {tmp_path / 'run'}, cache: false}}\n"
        "pipeline:\n"
        f"  - {{type: export, name: export, formats: [hf], dtype: {dense_type}, basename: m}}\n")
    llmopt.run("run", recipe)
    back = tmp_path / "run" / "artifacts" / "m-hf"
    qb = gptq_config(back)
    assert (qb["quant_method"], qb["bits"], qb["group_size"], qb["desc_act"], qb["sym"]) == \
        ("gptq", bits, group, desc_act, sym)
    ours = load_np(str(back / "model.safetensors"))
    checked = 0
    for name, t in theirs.items():
        if name.rsplit(".", 1)[-1] in GPTQ_SUFFIXES:
            assert ours[name].dtype == t.dtype, name
            assert np.array_equal(ours[name], t), name
            checked += 1
    layers = json.loads((ckpt / "config.json").read_text())["num_hidden_layers"]
    assert checked == len(GPTQ_SUFFIXES) * len(PROJ) * layers
    again = consumer_load(back)
    ids = SYNTH_IDS if model == "synth" else llmopt_logits(llmopt, back, tmp_path, text=TEXT)[0]
    diff = np.abs(consumer_logits(again, ids) - ref).max()
    print(f"auto-gptq {case}: llmopt's re-export in transformers vs the original, max |logit diff| = {diff:.3g}")
    assert diff <= LOGIT_TOL


# ------------------------------------------------ 3. auto-gptq's own file names and quantize_config.json

def test_llmopt_finds_auto_gptq_default_names(llmopt, synth, hf17m, shared, tmp_path):
    rows = calibration_rows("synth", hf17m, shared)
    ckpt = tmp_path / "auto-gptq-default"
    auto_gptq_quantize(synth, ckpt, 4, 128, True, False, examples_from_ids(rows), base_name=None)
    weights = ckpt / "gptq_model-4bit-128g.safetensors"
    assert weights.is_file() and not (ckpt / "model.safetensors").exists()
    qc = json.loads((ckpt / "quantize_config.json").read_text())
    assert (qc["bits"], qc["group_size"], qc["model_file_base_name"]) == (4, 128, None)
    # The consumer reads the same bytes under the name transformers looks for.
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    for f in ("config.json", "tokenizer.json"):
        (consumer / f).write_bytes((ckpt / f).read_bytes())
    (consumer / "model.safetensors").symlink_to(weights)
    # llmopt: auto-gptq's names only, quantize_config.json the only quantization config (config.json
    # without quantization_config, as auto-gptq before 0.5 wrote it).
    cfg = json.loads((ckpt / "config.json").read_text())
    del cfg["quantization_config"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    check_same_model(llmopt, ckpt, tmp_path, "auto-gptq default names", ids=SYNTH_IDS, consumer_dir=consumer)

    # A second *.safetensors without an index: which one is the model is ambiguous -> exit 2.
    (ckpt / "extra.safetensors").write_bytes(weights.read_bytes())
    p = subprocess.run([str(llmopt.exe), "-q", "logits", str(ckpt), "--ids", "3,20"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "ambiguous" in p.stderr and "extra.safetensors" in p.stderr, p.stderr
