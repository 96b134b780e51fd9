"""Peer check: Hugging Face transformers runs the same models as llmopt and agrees on the logits.

1. The 17M Llama HF directory (BF16 weights, upcast to f32 by both sides) in
   transformers.LlamaForCausalLM vs `llmopt logits --full`.
2. Our HF export of stories260K (`llmopt convert --to hf`) in LlamaForCausalLM vs `llmopt logits`
   on the original llama2.c .bin: checks the export's weight layout (q/k permutation, tied head)
   and config.json. Its tokenizer.json must load in `tokenizers` and AutoTokenizer and encode like
   llmopt does on the .bin with tok512.bin.

Tolerance: both sides compute in f32 from the same f32 weights; the only differences are summation
order and libm (exp, rsqrt) in a 6-layer network whose logits are O(10), so differences are a few
1e-6; 1e-4 (issue acceptance) leaves ~20x margin while a layout bug (wrong permutation, missing
norm, wrong eps) shows up as O(1).
"""
import json

import numpy as np
import pytest
import torch
import transformers

LOGIT_TOL = 1e-4

PROMPTS = [
    "Once upon a time, there was a little girl named Lily. She loved to play outside",
    "First Citizen:\nBefore we proceed any further, hear me speak.",
]


def hf_logits(model_dir, ids):
    model = transformers.LlamaForCausalLM.from_pretrained(
        str(model_dir), torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor([ids], dtype=torch.long))
    return out.logits[0].double().numpy()


def llmopt_logit_matrix(result):
    return np.array([p["logits"] for p in result["positions"]], dtype=np.float64)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_17m_logits_match_transformers(llmopt, hf17m, tmp_path, prompt):
    ours = llmopt.logits(hf17m, tmp_path, "--text", prompt)
    ids = ours["ids"]
    assert len(ids) > 5
    ref = hf_logits(hf17m, ids)
    mine = llmopt_logit_matrix(ours)
    assert mine.shape == ref.shape == (len(ids), 50257)
    diff = np.abs(mine - ref).max()
    print(f"17M: {len(ids)} tokens x {ref.shape[1]} logits, max |diff| = {diff:.3g}")
    assert diff <= LOGIT_TOL
    assert (mine.argmax(1) == ref.argmax(1)).all()


@pytest.fixture(scope="module")
def stories_hf(llmopt, stories_bin, stories_tok, tmp_path_factory):
    out = tmp_path_factory.mktemp("stories-hf") / "stories260K-hf"
    llmopt.run("convert", stories_bin, out, "--to", "hf", "--type", "f32", "--tokenizer", stories_tok)
    return out


def test_stories260k_hf_export_config(stories_hf):
    cfg = json.loads((stories_hf / "config.json").read_text())
    # The llama2.c header: dim=64 hidden=172 layers=5 heads=8 kv_heads=4 vocab=512 seq=512.
    expect = {"hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 5,
              "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 512,
              "max_position_embeddings": 512}
    assert {k: cfg.get(k) for k in expect} == expect
    assert cfg.get("model_type") == "llama"


def test_stories260k_hf_export_logits_match(llmopt, stories_hf, stories_bin, stories_tok,
                                            tmp_path):
    ours = llmopt.logits(stories_bin, tmp_path, "--tokenizer", stories_tok,
                         "--text", "Once upon a time, there was a little dog named Max. He")
    ids = ours["ids"]
    ref = hf_logits(stories_hf, ids)
    mine = llmopt_logit_matrix(ours)
    assert mine.shape == ref.shape == (len(ids), 512)
    diff = np.abs(mine - ref).max()
    print(f"stories260K HF export: {len(ids)} tokens, max |diff| = {diff:.3g}")
    assert diff <= LOGIT_TOL


def stories_texts(shared):
    """A few TinyStories paragraphs (text the 512-piece vocabulary was made for) plus edge cases."""
    stories = (shared / "text" / "tinystories_val.txt").read_text(encoding="utf-8")
    paragraphs = [p for p in stories.split("\n") if p.strip()][:40]
    return paragraphs + ["Hello world", "  two leading spaces", "Tom said: \"Wow!\" 123 456"]


def test_stories260k_hf_tokenizer_encodes_like_llmopt(llmopt, stories_hf, stories_bin, stories_tok,
                                                      shared, tmp_path):
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(stories_hf / "tokenizer.json"))
    auto = transformers.AutoTokenizer.from_pretrained(str(stories_hf))
    texts = stories_texts(shared)
    mismatches = []
    for n, text in enumerate(texts):
        f = tmp_path / f"text{n}.txt"
        f.write_text(text, encoding="utf-8")
        # Default BOS handling on both sides: llama2.c and Llama tokenizers add BOS (id 1).
        ours = llmopt.json("tokenize", stories_bin, "--tokenizer", stories_tok, "--file", f,
                           "--json", "-")["ids"]
        via_tokenizers = raw.encode(text).ids
        via_auto = auto(text)["input_ids"]
        if not (ours == via_tokenizers == via_auto):
            mismatches.append((text, ours, via_tokenizers, via_auto))
    print(f"stories260K tokenizer: {len(texts) - len(mismatches)}/{len(texts)} texts identical")
    assert not mismatches, "first mismatch (text, llmopt, tokenizers, AutoTokenizer): %r" % (
        mismatches[0],)
