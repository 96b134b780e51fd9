"""Peer check: llama.cpp (through llama-cpp-python) runs llmopt's GGUF export of stories260K.

The f32 GGUF written by `llmopt convert --to gguf` must load in llama.cpp and give
- the same token ids as `llmopt tokenize` (llama.cpp's SentencePiece-style tokenizer from the GGUF
  metadata, BOS added by default on both sides);
- next-token logits within 1e-3 of `llmopt logits --full` at every prompt position. Both sides use
  f32 weights; llama.cpp is run with an f32 KV cache so only summation order and libm differ
  (measured ~1e-5 on logits of O(10)); 1e-3 leaves ~100x margin. With llama.cpp's default f16 KV
  cache, K and V are rounded to f16 (relative error 2^-11), which alone moves logits by ~1e-2
  (measured 0.0102), so that configuration is only checked for identical greedy output;
- the same greedy continuation (64 tokens from "Once upon a time") as `llmopt generate`, ids and
  text, with both the f32 and the default f16 KV cache.
The 17M model's GGUF export (GPT-2 byte-level BPE vocabulary) is also run: ids and logits.
The greedy loop is written here (argmax of llama.cpp's logits), so no sampler settings are involved.
"""
import llama_cpp  # pinned in requirements.txt: a missing module must fail, not skip
import numpy as np
import pytest

LOGIT_TOL = 1e-3
N_PREDICT = 64
PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def stories_gguf(llmopt, stories_bin, stories_tok, tmp_path_factory):
    out = tmp_path_factory.mktemp("llama-cpp") / "stories260K-f32.gguf"
    llmopt.run("convert", stories_bin, out, "--to", "gguf", "--type", "f32",
               "--tokenizer", stories_tok)
    return out


GGML_TYPE_F32 = 0  # ggml_type enum value; llama.cpp's default KV cache type is F16 (1)


def load_llama(path, kv_cache):
    kv = {"type_k": GGML_TYPE_F32, "type_v": GGML_TYPE_F32} if kv_cache == "f32" else {}
    return llama_cpp.Llama(model_path=str(path), n_ctx=512, n_batch=512, n_threads=1, seed=0,
                           logits_all=True, verbose=False, **kv)


@pytest.fixture(scope="module")
def llm(stories_gguf):
    return load_llama(stories_gguf, "f32")


def texts(shared):
    stories = (shared / "text" / "tinystories_val.txt").read_text(encoding="utf-8")
    return [p for p in stories.split("\n") if p.strip()][:30] + [PROMPT, "Hello  world!"]


def test_tokenizer_matches(llmopt, llm, stories_gguf, shared, tmp_path):
    mismatches = []
    all_texts = texts(shared)
    for n, text in enumerate(all_texts):
        f = tmp_path / f"t{n}.txt"
        f.write_text(text, encoding="utf-8")
        ours = llmopt.json("tokenize", stories_gguf, "--file", f, "--json", "-")["ids"]
        theirs = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        if ours != theirs:
            mismatches.append((text, ours, theirs))
    print(f"llama.cpp tokenizer: {len(all_texts) - len(mismatches)}/{len(all_texts)} identical")
    assert not mismatches, "first mismatch (text, llmopt, llama.cpp): %r" % (mismatches[0],)


def test_logits_match(llmopt, llm, stories_gguf, tmp_path):
    text = "Once upon a time, there was a little girl named Lily. She loved to play in the park."
    ours = llmopt.logits(stories_gguf, tmp_path, "--text", text)
    ids = ours["ids"]
    mine = np.array([p["logits"] for p in ours["positions"]], dtype=np.float64)
    llm.reset()
    llm.eval(ids)
    theirs = np.array(llm.scores[: len(ids)], dtype=np.float64)
    assert mine.shape == theirs.shape == (len(ids), 512)
    diff = np.abs(mine - theirs).max()
    print(f"llama.cpp logits: {len(ids)} positions x 512, max |diff| = {diff:.3g}")
    assert diff <= LOGIT_TOL
    assert (mine.argmax(1) == theirs.argmax(1)).all()


@pytest.mark.parametrize("kv_cache", ["f32", "default"])
def test_greedy_generation_matches(llmopt, stories_gguf, kv_cache):
    llm = load_llama(stories_gguf, kv_cache)
    ours = llmopt.json("generate", stories_gguf, "--prompt", PROMPT, "-n", N_PREDICT, "--json", "-")
    prompt_ids = llm.tokenize(PROMPT.encode("utf-8"), add_bos=True)
    assert ours["prompt_ids"] == prompt_ids
    llm.reset()
    llm.eval(prompt_ids)
    generated = []
    eos = llm.token_eos()
    while len(generated) < N_PREDICT:
        next_id = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if next_id == eos:
            break
        generated.append(next_id)
        llm.eval([next_id])
    text = llm.detokenize(generated, prev_tokens=prompt_ids).decode("utf-8", errors="replace")
    print(f"llama.cpp greedy ({kv_cache} KV cache): {len(generated)} tokens: {text!r}")
    assert ours["ids"][: len(generated)] == generated
    assert len(ours["ids"]) in (len(generated), len(generated) + 1)  # llmopt may list the EOS
    assert ours["text"] == text


def test_17m_gguf_runs_in_llama_cpp(llmopt, hf17m, shared, tmp_path):
    """The 17M model's GGUF export (GPT-2 BPE vocab, tokenizer.ggml.pre) in llama.cpp: the same ids
    for the first 20 kB of tinystories_val.txt (no BOS: the GPT-2 vocab adds none) and the same
    logits within 1e-3 (f32 KV cache, as above)."""
    from conftest import utf8_prefix

    gguf_path = tmp_path / "17m-f32.gguf"
    llmopt.run("convert", hf17m, gguf_path, "--to", "gguf", "--type", "f32")
    llm = load_llama(gguf_path, "f32")

    text = utf8_prefix((shared / "text" / "tinystories_val.txt").read_bytes(), 20_000)
    cut = tmp_path / "tinystories-20k.txt"
    cut.write_bytes(text)
    ours = llmopt.json("tokenize", gguf_path, "--file", cut, "--json", "-", "--no-bos")["ids"]
    theirs = llm.tokenize(text, add_bos=False, special=False)
    print(f"17M GGUF tokenizer: llmopt {len(ours)} ids, llama.cpp {len(theirs)} ids")
    assert ours == theirs

    prompt = "Once upon a time, there was a little girl named Lily. She loved to play outside"
    result = llmopt.logits(gguf_path, tmp_path, "--text", prompt)
    ids = result["ids"]
    mine = np.array([p["logits"] for p in result["positions"]], dtype=np.float64)
    llm.reset()
    llm.eval(ids)
    theirs = np.array(llm.scores[: len(ids)], dtype=np.float64)
    diff = np.abs(mine - theirs).max()
    print(f"17M GGUF in llama.cpp: {len(ids)} positions x {mine.shape[1]}, max |diff| = {diff:.3g}")
    assert diff <= LOGIT_TOL
