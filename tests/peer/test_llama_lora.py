"""Peer check: llama.cpp (llama-cpp-python 0.3.16, `Llama(lora_path=...)`) applies llmopt's GGUF
LoRA adapters as llmopt applies the PEFT adapter they come from.

1. `llmopt finetune --out DIR` writes DIR/adapter.gguf next to the PEFT files. llama.cpp runs the
   base model's f32 GGUF export (`llmopt convert --to gguf`) with that adapter; its logits equal
   `llmopt logits --adapter DIR` (the PEFT adapter on the base) within LOGIT_TOL at every position:
   LoRA and rsLoRA (alpha written as alpha*sqrt(r), since llama.cpp scales by alpha/r), on
   stories260K (GQA: 8 query heads, 4 KV heads, so q and k rows are permuted with different head
   counts) and tinyllama-bpe-17m.
2. `llmopt convert ADAPTER --to gguf-lora --base MODEL` converts an adapter made by peft itself
   (get_peft_model, a few AdamW steps, save_pretrained) and llama.cpp applies it with the logits
   peft computes on transformers' LlamaForCausalLM.
3. DoRA has no llama.cpp form: convert is exit 2 naming the way out (merge), and finetune writes no
   adapter.gguf.
4. A recipe finetune (LoRA) -> export [gguf_lora, peft]: llama.cpp applies the export stage's
   model-lora.gguf to the base with the logits of `llmopt logits --adapter` of its model-peft/.

Tolerance: as test_llama_cpp.py (f32 weights and an f32 KV cache on both sides, ~1e-5 measured
on the base; the adapter adds a rank-r product of O(1) values, same rounding order): 1e-3.
MIN_EFFECT makes sure the adapter moves the logits far more than the tolerance.
"""
import subprocess

import llama_cpp  # pinned in requirements.txt: a missing module must fail, not skip
import numpy as np
import pytest

LOGIT_TOL = 1e-3
MIN_EFFECT = 0.1
PROMPT = "First Citizen:\nBefore we proceed any further, hear me speak. Once upon a time"
GGML_TYPE_F32 = 0


@pytest.fixture(scope="module")
def shakespeare(shared, tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "shk.txt"
    out.write_bytes((shared / "text" / "tinyshakespeare.txt").read_bytes()[:40000])
    return out


@pytest.fixture(scope="module")
def stories_gguf(llmopt, stories_bin, stories_tok, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora-base") / "stories260K-f32.gguf"
    llmopt.run("convert", stories_bin, out, "--to", "gguf", "--type", "f32", "--tokenizer", stories_tok)
    return out


@pytest.fixture(scope="module")
def tiny17m_gguf(llmopt, hf17m, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora-base17m") / "tinyllama-17m-f32.gguf"
    llmopt.run("convert", hf17m, out, "--to", "gguf", "--type", "f32")
    return out


def llama_logits(base_gguf, ids, lora=None):
    kw = {"lora_path": str(lora)} if lora else {}
    llm = llama_cpp.Llama(model_path=str(base_gguf), n_ctx=512, n_batch=512, n_threads=1, seed=0,
                          logits_all=True, verbose=False, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, **kw)
    llm.eval(ids)
    out = np.array(llm.scores[: len(ids)], dtype=np.float64)
    llm.close()
    return out


def llmopt_logits(llmopt, model, tmp_path, *extra):
    r = llmopt.logits(model, tmp_path, "--text", PROMPT, *extra)
    return r["ids"], np.array([p["logits"] for p in r["positions"]], dtype=np.float64)


def compare(name, ours, theirs, base):
    effect = np.abs(ours - base).max()
    diff = np.abs(ours - theirs).max()
    print(f"{name}: adapter moves logits by {effect:.3g}; llmopt --adapter vs llama.cpp --lora max |diff| = "
          f"{diff:.3g}")
    assert effect > MIN_EFFECT
    assert diff <= LOGIT_TOL
    assert (ours.argmax(1) == theirs.argmax(1)).all()


@pytest.mark.parametrize("variant", [
    ["--r", "4", "--alpha", "8"],
    ["--r", "8", "--alpha", "16", "--rslora", "--target-modules", "q_proj,k_proj,v_proj,o_proj"],
], ids=["lora", "rslora-attn"])
def test_finetune_gguf_adapter_in_llama_cpp(llmopt, stories_bin, stories_tok, stories_gguf, shakespeare, tmp_path,
                                            variant):
    adapter = tmp_path / "adapter"
    llmopt.run("finetune", stories_bin, "--tokenizer", stories_tok, "--data", shakespeare, "--seq-len", "64",
               "--batch-size", "4", "--steps", "6", "--lr", "1e-2", "--out", adapter, *variant)
    assert (adapter / "adapter.gguf").is_file()
    ids, ours = llmopt_logits(llmopt, stories_gguf, tmp_path, "--adapter", adapter)
    _, base = llmopt_logits(llmopt, stories_gguf, tmp_path)
    theirs = llama_logits(stories_gguf, ids, adapter / "adapter.gguf")
    compare("stories260K " + " ".join(variant), ours, theirs, base)
    # llmopt also reads the GGUF adapter (--adapter FILE.gguf) to the same logits.
    _, ours_gguf = llmopt_logits(llmopt, stories_gguf, tmp_path, "--adapter", adapter / "adapter.gguf")
    assert np.abs(ours_gguf - ours).max() <= 1e-5


def test_17m_gguf_adapter_in_llama_cpp(llmopt, hf17m, tiny17m_gguf, shakespeare, tmp_path):
    adapter = tmp_path / "adapter17m"
    llmopt.run("finetune", hf17m, "--data", shakespeare, "--seq-len", "64", "--batch-size", "2", "--steps", "4",
               "--lr", "5e-3", "--r", "8", "--alpha", "16", "--out", adapter)
    ids, ours = llmopt_logits(llmopt, tiny17m_gguf, tmp_path, "--adapter", adapter)
    _, base = llmopt_logits(llmopt, tiny17m_gguf, tmp_path)
    theirs = llama_logits(tiny17m_gguf, ids, adapter / "adapter.gguf")
    compare("tinyllama-bpe-17m r=8", ours, theirs, base)


def test_export_stage_gguf_lora_in_llama_cpp(llmopt, stories_bin, stories_tok, stories_gguf, shakespeare, tmp_path):
    recipe = tmp_path / "export-lora.yaml"
    recipe.write_text(
        "name: export-lora\nseed: 0\n"
        f"model: {{path: {stories_bin}, tokenizer: {stories_tok}}}\n"
        "pipeline:\n"
        "  - type: finetune\n"
        "    method: lora\n"
        "    lora: {r: 4, alpha: 8}\n"
        f"    train: {{path: {shakespeare}, format: text, seq_len: 64}}\n"
        "    max_steps: 6\n    batch_size: 4\n    lr: 0.01\n"
        "  - {type: export, formats: [gguf_lora, peft]}\n")
    run = tmp_path / "run"
    llmopt.run("run", recipe, "--out", run)
    art = run / "artifacts"
    ids, ours = llmopt_logits(llmopt, stories_gguf, tmp_path, "--adapter", art / "model-peft")
    _, base = llmopt_logits(llmopt, stories_gguf, tmp_path)
    theirs = llama_logits(stories_gguf, ids, art / "model-lora.gguf")
    compare("stories260K export stage gguf_lora", ours, theirs, base)


def test_peft_adapter_converted_for_llama_cpp(llmopt, stories_bin, stories_tok, stories_gguf, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    hf = tmp_path / "stories-hf"
    llmopt.run("convert", stories_bin, hf, "--to", "hf", "--type", "f32", "--tokenizer", stories_tok)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM.from_pretrained(str(hf), torch_dtype=torch.float32,
                                                          attn_implementation="eager")
    cfg = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                          "down_proj"])
    pm = peft.get_peft_model(model, cfg)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    pm.train()
    for _ in range(5):
        batch = torch.randint(0, 512, (2, 33))
        loss = pm(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    pm.eval()
    adapter = tmp_path / "peft-adapter"
    pm.save_pretrained(str(adapter))
    out = tmp_path / "peft-adapter.gguf"
    llmopt.run("convert", adapter, out, "--to", "gguf-lora", "--base", stories_gguf)
    ids, base = llmopt_logits(llmopt, stories_gguf, tmp_path)
    with torch.no_grad():
        ref = pm(torch.tensor([ids], dtype=torch.long)).logits[0].double().numpy()
    theirs = llama_logits(stories_gguf, ids, out)
    compare("peft-made adapter, converted", ref, theirs, base)


def test_dora_has_no_llama_cpp_form(llmopt, stories_bin, stories_tok, stories_gguf, shakespeare, tmp_path):
    adapter = tmp_path / "dora"
    llmopt.run("finetune", stories_bin, "--tokenizer", stories_tok, "--data", shakespeare, "--seq-len", "32",
               "--batch-size", "2", "--steps", "2", "--dora", "--out", adapter)
    assert (adapter / "adapter_model.safetensors").is_file()
    assert not (adapter / "adapter.gguf").exists()
    p = subprocess.run([str(llmopt.exe), "-q", "convert", str(adapter), str(tmp_path / "x.gguf"), "--to",
                        "gguf-lora", "--base", str(stories_gguf)], capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    assert "DoRA" in p.stderr and "merge" in p.stderr, p.stderr
    assert not (tmp_path / "x.gguf").exists()
