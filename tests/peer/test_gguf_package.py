"""Peer check: the `gguf` Python package (ggml's own gguf-py) reads llmopt's GGUF exports.

`llmopt convert --to gguf` of the 17M HF model and of stories260K (llama2.c .bin + tok512.bin), at
f32 and f16, must have llama.cpp's tensor names, shapes (ggml order: fastest-varying dimension
first), tensor types (2-D weights at the requested type, 1-D norms F32), the llama.* metadata equal
to the source hyper-parameters and the tokenizer.ggml.* vocabulary. Values are checked too:
- 17M: against model.safetensors (read by the `safetensors` package), with q/k rows permuted the
  way llama.cpp's convert_hf_to_gguf.py does (rotary pairs (i, i+d/2) -> (2i, 2i+1) per head);
- stories260K: against stories260K.llamacpp-f32.gguf, written from the same .bin by llama.cpp's
  own llama2c converter (an independent GGUF writer): same tensors, same vocabulary.
f32 exports must be bit-exact (BF16 -> f32 is exact); f16 exports must equal the f32 values rounded
to nearest f16 (numpy's float16 cast rounds to nearest even, as IEEE conversion does).
"""
import json

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

F32, F16 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16
FILE_TYPE = {"f32": 0, "f16": 1}  # llama_ftype: ALL_F32, MOSTLY_F16

PER_LAYER = {  # GGUF name suffix -> HF name suffix
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def field(reader, key):
    f = reader.get_field(key)
    assert f is not None, f"GGUF key {key} missing"
    return f.contents()


def expected_names(layers, with_output):
    names = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{s}" for i in range(layers) for s in PER_LAYER}
    return names | ({"output.weight"} if with_output else set())


def hf_name(gguf_name):
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    if gguf_name == "output.weight":
        return "lm_head.weight"
    _, layer, suffix = gguf_name.split(".", 2)
    return f"model.layers.{layer}.{PER_LAYER[suffix]}"


def permute_rope(w, heads):
    """HF q/k rows [heads * d] with rotary halves (i, i + d/2) -> GGUF interleaved (2i, 2i+1)."""
    rows = w.shape[0]
    return w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_tensor_types(reader, ftype):
    want_2d = F32 if ftype == "f32" else F16
    for t in reader.tensors:
        want = F32 if len(t.shape) == 1 else want_2d
        assert t.tensor_type == want, f"{t.name}: {t.tensor_type.name}, expected {want.name}"


def check_values(reader, reference, ftype):
    """reference: GGUF name -> f32 numpy array in GGUF row-major layout."""
    worst = 0.0
    for t in reader.tensors:
        ref = reference[t.name].astype(np.float32)
        if ftype == "f16" and len(t.shape) > 1:
            ref = ref.astype(np.float16)
        got = np.asarray(t.data)
        assert got.shape == ref.shape, f"{t.name}: data shape {got.shape}, expected {ref.shape}"
        assert got.dtype == ref.dtype, f"{t.name}: {got.dtype} vs {ref.dtype}"
        mismatched = int((got != ref).sum())
        assert mismatched == 0, f"{t.name}: {mismatched} of {ref.size} values differ"
        worst = max(worst, float(np.abs(got.astype(np.float64) - ref).max()))
    return worst


@pytest.fixture(scope="module")
def hf17m_tensors(hf17m):
    return {k: v.float().numpy() for k, v in load_file(str(hf17m / "model.safetensors")).items()}


@pytest.mark.parametrize("ftype", ["f32", "f16"])
def test_17m_gguf_export(llmopt, hf17m, hf17m_tensors, tmp_path, ftype):
    cfg = json.loads((hf17m / "config.json").read_text())
    out = tmp_path / f"17m-{ftype}.gguf"
    llmopt.run("convert", hf17m, out, "--to", "gguf", "--type", ftype)
    reader = gguf.GGUFReader(str(out))

    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "general.file_type") == FILE_TYPE[ftype]
    hyper = {"llama.block_count": cfg["num_hidden_layers"],
             "llama.context_length": cfg["max_position_embeddings"],
             "llama.embedding_length": cfg["hidden_size"],
             "llama.feed_forward_length": cfg["intermediate_size"],
             "llama.attention.head_count": cfg["num_attention_heads"],
             "llama.attention.head_count_kv": cfg["num_key_value_heads"],
             "llama.rope.dimension_count": cfg["hidden_size"] // cfg["num_attention_heads"]}
    assert {k: field(reader, k) for k in hyper} == hyper
    assert field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(
        cfg["rms_norm_eps"], rel=1e-6)
    assert field(reader, "llama.rope.freq_base") == pytest.approx(cfg["rope_theta"])

    # Vocabulary: GPT-2 byte-level BPE, ids as in tokenizer.json.
    tok = json.loads((hf17m / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert len(tokens) == cfg["vocab_size"]
    assert all(tokens[i] == piece for piece, i in vocab.items() if i < len(tokens))
    merges = field(reader, "tokenizer.ggml.merges")
    ref_merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    assert merges == ref_merges
    assert field(reader, "tokenizer.ggml.bos_token_id") == cfg["bos_token_id"]
    assert field(reader, "tokenizer.ggml.eos_token_id") == cfg["eos_token_id"]

    # Tensors: names, ggml shapes, types, values. Tied embeddings -> no output.weight.
    names = {t.name for t in reader.tensors}
    assert names == expected_names(cfg["num_hidden_layers"], not cfg["tie_word_embeddings"])
    for t in reader.tensors:
        hf_shape = hf17m_tensors[hf_name(t.name)].shape
        assert list(t.shape) == list(reversed(hf_shape)), f"{t.name}: ggml shape {list(t.shape)}"
    check_tensor_types(reader, ftype)
    reference = {}
    for t in reader.tensors:
        w = hf17m_tensors[hf_name(t.name)]
        if t.name.endswith("attn_q.weight"):
            w = permute_rope(w, cfg["num_attention_heads"])
        elif t.name.endswith("attn_k.weight"):
            w = permute_rope(w, cfg["num_key_value_heads"])
        reference[t.name] = w
    check_values(reader, reference, ftype)
    print(f"17M {ftype}: {len(reader.tensors)} tensors, {len(tokens)} tokens, "
          f"{len(merges)} merges, all values exact")


@pytest.fixture(scope="module")
def llamacpp_reference(shared):
    return gguf.GGUFReader(str(shared / "models" / "stories260K" / "stories260K.llamacpp-f32.gguf"))


@pytest.mark.parametrize("ftype", ["f32", "f16"])
def test_stories260k_gguf_export(llmopt, stories_bin, stories_tok, llamacpp_reference, tmp_path,
                                 ftype):
    out = tmp_path / f"stories260K-{ftype}.gguf"
    llmopt.run("convert", stories_bin, out, "--to", "gguf", "--type", ftype,
               "--tokenizer", stories_tok)
    reader = gguf.GGUFReader(str(out))
    ref = llamacpp_reference

    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "general.file_type") == FILE_TYPE[ftype]
    # The llama2.c header: dim=64 hidden=172 layers=5 heads=8 kv_heads=4 vocab=512 seq=512.
    hyper = {"llama.block_count": 5, "llama.context_length": 512, "llama.embedding_length": 64,
             "llama.feed_forward_length": 172, "llama.attention.head_count": 8,
             "llama.attention.head_count_kv": 4, "llama.rope.dimension_count": 8}
    assert {k: field(reader, k) for k in hyper} == hyper
    # llama.cpp's converter agrees on every hyper-parameter it writes, except context_length,
    # which it takes from its own --ctx option (default 128) rather than the header's seq_len.
    for k in hyper:
        if k != "llama.context_length" and ref.get_field(k) is not None:
            assert field(ref, k) == hyper[k], k
    assert field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(
        field(ref, "llama.attention.layer_norm_rms_epsilon"), rel=1e-6)

    # Vocabulary: SentencePiece-style ("llama") with scores and token types as llama.cpp wrote them.
    assert field(reader, "tokenizer.ggml.model") == field(ref, "tokenizer.ggml.model") == "llama"
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == 512
    assert tokens == field(ref, "tokenizer.ggml.tokens")
    np.testing.assert_array_equal(field(reader, "tokenizer.ggml.scores"),
                                  field(ref, "tokenizer.ggml.scores"))
    np.testing.assert_array_equal(field(reader, "tokenizer.ggml.token_type"),
                                  field(ref, "tokenizer.ggml.token_type"))
    for k in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
              "tokenizer.ggml.unknown_token_id"):
        if ref.get_field(k) is not None:
            assert field(reader, k) == field(ref, k), k

    # Tensors: llama.cpp's converter also writes output.weight (a copy of the shared classifier);
    # ours leaves it out when tied, which llama.cpp loads as tied. Every tensor we write must equal
    # llama.cpp's, with the same ggml shape.
    names = {t.name for t in reader.tensors}
    assert names == expected_names(5, False)
    ref_tensors = {t.name: t for t in ref.tensors}
    assert names <= set(ref_tensors)
    for t in reader.tensors:
        assert list(t.shape) == list(ref_tensors[t.name].shape), t.name
    check_tensor_types(reader, ftype)
    check_values(reader, {n: np.asarray(ref_tensors[n].data) for n in names}, ftype)
    print(f"stories260K {ftype}: {len(names)} tensors equal to llama.cpp's converter output")
