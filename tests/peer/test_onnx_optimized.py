"""Peer check: llmopt's optimized ONNX graph (`llmopt convert --to onnx --optimize`: ONNX Runtime's
fused contrib ops) in ONNX Runtime, and under onnxruntime-genai where that package is installed.

For stories260K (llama2.c, GQA 8/4, tied), tinyllama-bpe-17m (HF, BF16 weights) and a synth model
of another shape (GQA 6/2, head_dim 16, FFN 200, q/k/v biases, tied, Llama-3 RoPE scaling):
1. the KV graph's logits, with the prompt given at once (GroupQueryAttention's prompt path) and
   fed one token at a time (its decode path), match `llmopt logits --full` (llmopt's engine)
   within OPT_TOL; the synth model's also match transformers' LlamaForCausalLM directly;
2. 64 greedy tokens through the KV graph equal `llmopt generate --temp 0` (stories260K, 17M) or
   transformers' greedy `generate` (synth: its tokenizer does not cover its 300-token vocabulary);
3. the graph is made of the fused ops (no Softmax / standalone RMSNorm arithmetic left), with
   RotaryEmbedding in HF's rotate-half layout (interleaved 0);
4. onnxruntime-genai (pinned in requirements.txt; skipped where it is not installed) loads the
   directory through genai_config.json and generates the same 64 greedy tokens.

Tolerance: OPT_TOL = 1e-4, the plain graph's LOGIT_TOL. The fused kernels compute the same float32
function from the same float32 weights but sum in another order: RMSNorm's mean of squares
(SkipSimplifiedLayerNormalization accumulates the residual sum and its squares in one pass),
q·k and p·v inside GroupQueryAttention (MLAS blocks), the packed q/k/v and gate/up MatMuls
(wider N, other blocking), and cos/sin taken from a table (float32 angle, cos in double) instead
of computed in the graph. Reordering a float32 sum of n terms of size s moves it by about
sqrt(n)·2^-24·s; over the layers that is a few 1e-6 on logits of O(10) (measured below: ≤ 2e-5),
so 1e-4 leaves margin, while a wrong RoPE layout, a wrong GQA head mapping or a lost bias
moves logits by O(0.1-1).
"""
import json

import numpy as np
import pytest
from onnx_common import make_biased_llama3_synth, model_config

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

OPT_TOL = 1e-4
PROMPT_STORIES = "Once upon a time, there was a little dog named Max. He liked to run"
PROMPT_17M = "First Citizen:\nBefore we proceed any further, hear me speak."
N_GREEDY = 64


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])



class KvRunner:
    """Feeds a KV graph (batch 1): a chunk of tokens per call, present -> past."""

    def __init__(self, path, cfg):
        self.sess = session(path)
        self.L, self.kv = cfg["num_hidden_layers"], cfg["num_key_value_heads"]
        self.hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        self.out_names = [o.name for o in self.sess.get_outputs()]
        self.past = {f"past_key_values.{l}.{w}": np.zeros((1, self.kv, 0, self.hd), np.float32)
                     for l in range(self.L) for w in ("key", "value")}
        self.pos = 0

    def step(self, ids):
        ids = np.array([ids], np.int64)
        s = ids.shape[1]
        feeds = {"input_ids": ids, "attention_mask": np.ones((1, self.pos + s), np.int64),
                 "position_ids": np.arange(self.pos, self.pos + s, dtype=np.int64)[None], **self.past}
        outs = dict(zip(self.out_names, self.sess.run(self.out_names, feeds)))
        for l in range(self.L):
            for w in ("key", "value"):
                present = outs[f"present.{l}.{w}"]
                assert present.shape == (1, self.kv, self.pos + s, self.hd)
                self.past[f"past_key_values.{l}.{w}"] = present
        self.pos += s
        return outs["logits"][0].astype(np.float64)


def llmopt_logit_matrix(result):
    return np.array([p["logits"] for p in result["positions"]], dtype=np.float64)


class Exported:
    def __init__(self, llmopt, tmp, model, extra, ids=None, prompt=None):
        self.llmopt, self.model, self.extra = llmopt, model, list(extra)
        self.dir = tmp / "onnx-opt"
        llmopt.run("convert", model, self.dir, "--to", "onnx", "--optimize", *self.extra)
        self.cfg = model_config(self.dir)
        ours = llmopt.logits(model, tmp, *self.extra,
                             *(["--text", prompt] if prompt is not None else ["--ids", ",".join(map(str, ids))]))
        self.ids = ours["ids"]
        self.ref = llmopt_logit_matrix(ours)
        self.prompt = prompt


@pytest.fixture(scope="module")
def stories(llmopt, stories_bin, stories_tok, tmp_path_factory):
    return Exported(llmopt, tmp_path_factory.mktemp("opt-stories"), stories_bin, ["--tokenizer", stories_tok],
                    prompt=PROMPT_STORIES)


@pytest.fixture(scope="module")
def m17(llmopt, hf17m, tmp_path_factory):
    return Exported(llmopt, tmp_path_factory.mktemp("opt-17m"), hf17m, [], prompt=PROMPT_17M)


@pytest.fixture(scope="module")
def synth(llmopt, tmp_path_factory):
    """`llmopt synth` of another shape with q/k/v biases and Llama-3 RoPE scaling (theta 5e5,
    factor 8 over an original context of 64) added to its config.json and safetensors here."""
    tmp = tmp_path_factory.mktemp("opt-synth")
    src = make_biased_llama3_synth(llmopt, tmp)
    ids = np.random.default_rng(3).integers(0, 300, 40).tolist()
    return Exported(llmopt, tmp, src, [], ids=ids)


MODELS = ["stories", "m17", "synth"]


@pytest.mark.parametrize("name", MODELS)
def test_logits_match_llmopt(request, name):
    ex = request.getfixturevalue(name)
    prompt = KvRunner(ex.dir / "model.onnx", ex.cfg).step(ex.ids)
    kv = KvRunner(ex.dir / "model.onnx", ex.cfg)
    stepped = np.stack([kv.step([t])[0] for t in ex.ids])
    # A chunk after a past: the first half at once, then the rest one token at a time.
    half = len(ex.ids) // 2
    mixed_kv = KvRunner(ex.dir / "model.onnx", ex.cfg)
    mixed = np.concatenate([mixed_kv.step(ex.ids[:half])] + [mixed_kv.step([t]) for t in ex.ids[half:]])
    d_prompt, d_step, d_mixed = (float(np.abs(x - ex.ref).max()) for x in (prompt, stepped, mixed))
    print(f"{name}: {len(ex.ids)} tokens, optimized graph max |diff| vs llmopt: prompt {d_prompt:.3g}, "
          f"token by token {d_step:.3g}, half + steps {d_mixed:.3g} (tol {OPT_TOL})")
    assert prompt.shape == ex.ref.shape
    assert d_prompt <= OPT_TOL and d_step <= OPT_TOL and d_mixed <= OPT_TOL


def test_synth_matches_transformers(synth):
    """Biases, GQA 6/2, tied head and Llama-3 RoPE scaling against transformers directly."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.LlamaForCausalLM.from_pretrained(str(synth.model), torch_dtype=torch.float32,
                                                          attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        ref = model(torch.tensor([synth.ids])).logits[0].double().numpy()
    ours = KvRunner(synth.dir / "model.onnx", synth.cfg).step(synth.ids)
    diff = float(np.abs(ours - ref).max())
    assert np.abs(ref - synth.ref).max() <= OPT_TOL  # llmopt's engine agrees with transformers too
    print(f"synth: optimized graph vs transformers max |diff| = {diff:.3g}")
    assert diff <= OPT_TOL


def greedy_onnx(ex, prompt_ids, n):
    kv = KvRunner(ex.dir / "model.onnx", ex.cfg)
    logits = kv.step(prompt_ids)
    toks = []
    for _ in range(n):
        t = int(logits[-1].argmax())
        toks.append(t)
        logits = kv.step([t])
    return toks


def greedy_reference(ex, name):
    """(prompt ids, 64 greedy ids) from llmopt generate, or transformers for the synth model."""
    if name == "synth":
        torch = pytest.importorskip("torch")
        transformers = pytest.importorskip("transformers")
        model = transformers.LlamaForCausalLM.from_pretrained(str(ex.model), torch_dtype=torch.float32,
                                                              attn_implementation="eager")
        model.eval()
        prompt = ex.ids[:16]
        with torch.no_grad():
            out = model.generate(torch.tensor([prompt]), max_new_tokens=N_GREEDY, min_new_tokens=N_GREEDY,
                                 do_sample=False, pad_token_id=0)
        return prompt, out[0, len(prompt):].tolist()
    gen = json.loads(ex.llmopt.run("generate", ex.model, *ex.extra, "--prompt", ex.prompt, "-n", N_GREEDY,
                                   "--temp", "0", "--json", "-"))
    return [int(t) for t in gen["prompt_ids"]], [int(t) for t in gen["ids"]]


@pytest.mark.parametrize("name", MODELS)
def test_greedy_64_tokens(request, name):
    ex = request.getfixturevalue(name)
    prompt, ref = greedy_reference(ex, name)
    assert len(ref) == N_GREEDY
    toks = greedy_onnx(ex, prompt, N_GREEDY)
    first = next((i for i, (a, b) in enumerate(zip(toks, ref)) if a != b), None)
    print(f"{name}: {N_GREEDY} greedy tokens through the optimized KV graph, first difference at {first}")
    assert toks == ref


def test_graph_uses_fused_ops(stories):
    m = onnx.load(str(stories.dir / "model.onnx"))
    ops = {}
    for n in m.graph.node:
        ops[(n.domain, n.op_type)] = ops.get((n.domain, n.op_type), 0) + 1
    L = stories.cfg["num_hidden_layers"]
    ms = "com.microsoft"
    assert ops.get((ms, "GroupQueryAttention")) == L
    assert ops.get((ms, "RotaryEmbedding")) == 2 * L
    assert ops.get(("", "SimplifiedLayerNormalization")) == 1
    assert ops.get((ms, "SkipSimplifiedLayerNormalization")) == 2 * L
    assert ("", "Softmax") not in ops and ("", "ReduceMean") not in ops and ("", "Sqrt") not in ops
    for n in m.graph.node:
        if n.op_type == "RotaryEmbedding":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            assert attrs.get("interleaved", 0) == 0
        if n.op_type == "GroupQueryAttention":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            assert (attrs["num_heads"], attrs["kv_num_heads"]) == (stories.cfg["num_attention_heads"],
                                                                   stories.cfg["num_key_value_heads"])
    names_in = [i.name for i in m.graph.input]
    names_out = [o.name for o in m.graph.output]
    assert names_in[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert names_in[3:] == [f"past_key_values.{l}.{w}" for l in range(L) for w in ("key", "value")]
    assert names_out == ["logits"] + [f"present.{l}.{w}" for l in range(L) for w in ("key", "value")]
    g = json.loads((stories.dir / "genai_config.json").read_text())
    d = g["model"]["decoder"]
    assert g["model"]["type"] == "llama" and d["filename"] == "model.onnx"
    assert (d["num_hidden_layers"], d["num_attention_heads"], d["num_key_value_heads"], d["head_size"]) == (
        L, stories.cfg["num_attention_heads"], stories.cfg["num_key_value_heads"],
        stories.cfg["hidden_size"] // stories.cfg["num_attention_heads"])
    assert g["model"]["context_length"] == stories.cfg["max_position_embeddings"]


@pytest.mark.parametrize("name", ["stories", "m17"])
def test_onnxruntime_genai_generates(request, name):
    og = pytest.importorskip("onnxruntime_genai")
    ex = request.getfixturevalue(name)
    prompt, ref = greedy_reference(ex, name)
    model = og.Model(str(ex.dir))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + N_GREEDY, do_sample=False, top_k=1)
    params.input_ids = np.array([prompt], np.int32)
    gen = og.Generator(model, params)
    while not gen.is_done():
        gen.compute_logits()
        gen.generate_next_token()
    seq = [int(t) for t in gen.get_sequence(0)]
    toks = seq[len(prompt):]
    first = next((i for i, (a, b) in enumerate(zip(toks, ref)) if a != b), None)
    print(f"{name}: onnxruntime-genai {og.__version__ if hasattr(og, '__version__') else ''} generated "
          f"{len(toks)} tokens, first difference vs llmopt at {first}")
    assert toks == ref


def test_quantized_q4_0(llmopt, hf17m, tmp_path):
    """A q4_0 tinyllama-bpe-17m (`llmopt quantize --method rtn`): the optimized graph keeps each
    packed projection as the plain export maps it (MatMulNBits where io/onnx_quant.h has the
    mapping; the dense packing of q/k/v and gate/up applies to dense weights only) and gives
    llmopt's logits on the packed GGUF within OPT_TOL (the same float32 arithmetic on the same
    dequantized values, summed in another order)."""
    q = tmp_path / "17m-q4_0.gguf"
    llmopt.run("quantize", hf17m, q, "--method", "rtn", "--format", "q4_0", "--fallback", "f16")
    plain, opt = tmp_path / "plain", tmp_path / "opt"
    llmopt.run("convert", q, plain, "--to", "onnx")
    llmopt.run("convert", q, opt, "--to", "onnx", "--optimize")

    def count(d, op):
        return sum(n.op_type == op for n in onnx.load(str(d / "model.onnx")).graph.node)

    n_plain, n_opt = count(plain, "MatMulNBits"), count(opt, "MatMulNBits")
    ours = llmopt.logits(q, tmp_path, "--text", PROMPT_17M)
    ref = llmopt_logit_matrix(ours)
    cfg = model_config(opt)
    prompt = KvRunner(opt / "model.onnx", cfg).step(ours["ids"])
    kv = KvRunner(opt / "model.onnx", cfg)
    stepped = np.stack([kv.step([t])[0] for t in ours["ids"]])
    d_prompt, d_step = float(np.abs(prompt - ref).max()), float(np.abs(stepped - ref).max())
    print(f"17M q4_0: MatMulNBits nodes plain {n_plain} / optimized {n_opt}; optimized graph max |diff| vs llmopt "
          f"on the GGUF: prompt {d_prompt:.3g}, token by token {d_step:.3g}")
    assert n_opt == n_plain
    assert d_prompt <= OPT_TOL and d_step <= OPT_TOL


def test_nocache_variant(llmopt, stories, stories_bin, stories_tok, tmp_path):
    """The optimized no-cache graph (GroupQueryAttention without past) scores a prompt as llmopt."""
    out = tmp_path / "nc"
    llmopt.run("convert", stories_bin, out, "--to", "onnx", "--optimize", "--onnx-variant", "nocache",
               "--tokenizer", stories_tok)
    assert not (out / "genai_config.json").exists()  # genai runs the KV graph only
    ids = np.array([stories.ids], np.int64)
    logits = session(out / "model.onnx").run(["logits"], {
        "input_ids": ids, "attention_mask": np.ones_like(ids),
        "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None]})[0][0]
    diff = float(np.abs(logits - stories.ref).max())
    print(f"stories: optimized no-cache graph max |diff| vs llmopt {diff:.3g}")
    assert diff <= OPT_TOL


def test_mistral_sliding_window(llmopt, tmp_path):
    """A Mistral-style synth (sliding_window 8, GQA 4/2) over 30 tokens: GroupQueryAttention's
    local_window_size (sliding_window - 1: it counts the keys left of the query) keeps the same
    keys as llmopt's window, with the prompt at once and token by token."""
    src = tmp_path / "mistral"
    llmopt.run("synth", src, "--dim", 64, "--ffn", 128, "--layers", 2, "--heads", 4, "--kv-heads", 2,
               "--vocab", 300, "--seed", 4)
    cfg = model_config(src)
    cfg.update(architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=8)
    (src / "config.json").write_text(json.dumps(cfg, indent=2))
    ids = [int(i) for i in np.random.default_rng(8).integers(0, 300, 30)]
    ref = llmopt_logit_matrix(llmopt.logits(src, tmp_path, "--ids", ",".join(map(str, ids))))
    # The window matters: without it llmopt's logits move by far more than OPT_TOL.
    alt = tmp_path / "nowindow"
    alt.mkdir()
    (alt / "config.json").write_text(json.dumps({**cfg, "sliding_window": None}))
    for f in src.iterdir():
        if f.name != "config.json":
            (alt / f.name).symlink_to(f)
    no_window = llmopt_logit_matrix(llmopt.logits(alt, tmp_path, "--ids", ",".join(map(str, ids))))
    assert np.abs(no_window - ref).max() > 100 * OPT_TOL
    out = tmp_path / "mistral-opt"
    llmopt.run("convert", src, out, "--to", "onnx", "--optimize")
    ocfg = model_config(out)
    prompt = KvRunner(out / "model.onnx", ocfg).step(ids)
    kv = KvRunner(out / "model.onnx", ocfg)
    stepped = np.stack([kv.step([t])[0] for t in ids])
    d_prompt, d_step = float(np.abs(prompt - ref).max()), float(np.abs(stepped - ref).max())
    print(f"mistral sliding window 8: optimized graph max |diff| vs llmopt: prompt {d_prompt:.3g}, "
          f"token by token {d_step:.3g}")
    assert d_prompt <= OPT_TOL and d_step <= OPT_TOL
