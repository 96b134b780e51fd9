"""Peer check: LoRA adapters interoperate with Hugging Face peft.

1. An adapter trained by `llmopt finetune` on the llama2.c stories260K (PEFT key names and
   adapter_config.json) loads with peft.PeftModel onto transformers' LlamaForCausalLM built from our
   HF export of the same base (`llmopt convert --to hf`): the logits equal `llmopt logits
   --adapter` (LoRA, rsLoRA, DoRA, a regex target set).
2. An adapter made by peft itself (get_peft_model, a few optimizer steps so lora_B is not zero,
   save_pretrained) loads in llmopt with the same logits as peft gives.
3. `llmopt finetune` killed with SIGKILL mid-run, then run again with --resume, writes an adapter
   byte-identical to an uninterrupted run.
4. Prompt learning (prompt tuning, prefix tuning, P-tuning): our adapters load with
   PeftModel.from_pretrained and give llmopt's logits (peft returns logits for the virtual tokens
   too: the real tokens' are compared), peft's adapters (get_peft_model, a few steps,
   save_pretrained) load in llmopt with peft's logits, our text initialization equals peft's
   prompt_tuning_init TEXT, and adapters that do not fit the base are exit 2.

Tolerance: fp32 both sides; the base models already agree to LOGIT_TOL (test_transformers.py), and
the adapter adds a rank-r product of O(1) values: same order of rounding, so the same bound.
"""
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
import transformers

peft = pytest.importorskip("peft")

LOGIT_TOL = 1e-4
# The adapter must move the logits by far more than the tolerance, or the comparison proves nothing.
MIN_EFFECT = 1e-2
PROMPT = "First Citizen:\nBefore we proceed any further, hear me speak. Once upon a time"


@pytest.fixture(scope="module")
def stories_hf(llmopt, stories_bin, stories_tok, tmp_path_factory):
    out = tmp_path_factory.mktemp("stories-hf") / "stories260K-hf"
    llmopt.run("convert", stories_bin, out, "--to", "hf", "--type", "f32", "--tokenizer", stories_tok)
    return out


@pytest.fixture(scope="module")
def shakespeare(shared, tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "shk.txt"
    out.write_bytes((shared / "text" / "tinyshakespeare.txt").read_bytes()[:40000])
    return out


def hf_model(model_dir):
    m = transformers.LlamaForCausalLM.from_pretrained(
        str(model_dir), torch_dtype=torch.float32, attn_implementation="eager")
    m.eval()
    return m


def logits_of(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids], dtype=torch.long)).logits[0].double().numpy()


def llmopt_logits(llmopt, stories_bin, stories_tok, tmp_path, *extra):
    r = llmopt.logits(stories_bin, tmp_path, "--tokenizer", stories_tok, "--text", PROMPT, *extra)
    return r["ids"], np.array([p["logits"] for p in r["positions"]], dtype=np.float64)


@pytest.mark.parametrize("variant", [
    ["--r", "4", "--alpha", "8"],
    ["--r", "8", "--alpha", "16", "--rslora"],
    ["--r", "4", "--alpha", "8", "--dora"],
    ["--r", "2", "--alpha", "4", "--target-modules", r"model\.layers\.[0-2]\.(self_attn|mlp)\..*", "--dora"],
], ids=["lora", "rslora", "dora", "regex-dora"])
def test_llmopt_adapter_in_peft(llmopt, stories_bin, stories_tok, stories_hf, shakespeare, tmp_path, variant):
    adapter = tmp_path / "adapter"
    llmopt.run("finetune", stories_bin, "--tokenizer", stories_tok, "--data", shakespeare, "--seq-len", "64",
               "--batch-size", "4", "--steps", "6", "--lr", "1e-2", "--out", adapter, *variant)
    cfg = peft.PeftConfig.from_pretrained(str(adapter))
    assert cfg.peft_type == peft.PeftType.LORA and cfg.task_type == "CAUSAL_LM"
    ids, ours = llmopt_logits(llmopt, stories_bin, stories_tok, tmp_path, "--adapter", adapter)
    base = logits_of(hf_model(stories_hf), ids)
    pm = peft.PeftModel.from_pretrained(hf_model(stories_hf), str(adapter))
    pm.eval()
    ref = logits_of(pm, ids)
    effect = np.abs(ref - base).max()
    diff = np.abs(ours - ref).max()
    print(f"{variant}: adapter moves logits by {effect:.3g}; llmopt vs peft max |diff| = {diff:.3g}")
    assert effect > MIN_EFFECT
    assert diff <= LOGIT_TOL


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_peft_adapter_in_llmopt(llmopt, stories_bin, stories_tok, stories_hf, tmp_path, dora):
    torch.manual_seed(0)
    model = hf_model(stories_hf)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, use_dora=dora, task_type="CAUSAL_LM",
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
    ids, ours = llmopt_logits(llmopt, stories_bin, stories_tok, tmp_path, "--adapter", adapter)
    ref = logits_of(pm, ids)
    base = logits_of(hf_model(stories_hf), ids)
    effect = np.abs(ref - base).max()
    diff = np.abs(ours - ref).max()
    print(f"peft adapter (dora={dora}): moves logits by {effect:.3g}; llmopt vs peft max |diff| = {diff:.3g}")
    assert effect > MIN_EFFECT
    assert diff <= LOGIT_TOL


def test_adapter_shape_mismatch_is_exit_2(llmopt, stories_bin, stories_tok, stories_hf, tmp_path):
    model = hf_model(stories_hf)
    pm = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"],
                                                    task_type="CAUSAL_LM"))
    adapter = tmp_path / "bad"
    pm.save_pretrained(str(adapter))
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
    tensors[key] = torch.zeros(63, 4)
    save_file(tensors, str(adapter / "adapter_model.safetensors"))
    p = subprocess.run([str(llmopt.exe), "-q", "logits", str(stories_bin), "--tokenizer", str(stories_tok),
                        "--text", "Hello", "--adapter", str(adapter)], capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    assert "model.layers.0.self_attn.q_proj" in p.stderr and "lora_B" in p.stderr, p.stderr


@pytest.mark.parametrize("method", [
    ["--dropout", "0.1", "--dora"],
    ["--method", "ptuning", "--num-virtual-tokens", "6", "--encoder-hidden", "32"],
], ids=["dora", "ptuning"])
def test_kill_9_then_resume_gives_identical_adapter(llmopt, stories_bin, stories_tok, shakespeare, tmp_path, method):
    args = ["finetune", str(stories_bin), "--tokenizer", str(stories_tok), "--data", str(shakespeare),
            "--seq-len", "64", "--batch-size", "4", "--steps", "40", "--lr", "5e-3",
            "--save-every", "5", "--warmup", "3", *method]
    straight = tmp_path / "straight"
    llmopt.run(*args, "--out", straight)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([str(llmopt.exe), "-q", *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill it once a checkpoint past step 10 exists and before it finishes.
    deadline = time.time() + 300
    ckpt = killed / "checkpoints"
    while time.time() < deadline and proc.poll() is None:
        steps = [int(d.name[5:]) for d in ckpt.glob("step-*") if (d / "trainer_state.json").exists()] \
            if ckpt.is_dir() else []
        if steps and max(steps) >= 10:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        pytest.skip("the run finished before it could be killed (machine too fast for 40 steps)")
    assert not (killed / "adapter_model.safetensors").exists()
    llmopt.run(*args, "--out", killed, "--resume")
    a = (straight / "adapter_model.safetensors").read_bytes()
    b = (killed / "adapter_model.safetensors").read_bytes()
    assert a == b
    assert not (killed / "checkpoints").exists()


# --- prompt learning -------------------------------------------------------------------------

PROMPT_METHODS = {
    "prompt": ["--method", "prompt", "--num-virtual-tokens", "6"],
    "prompt-text": ["--method", "prompt", "--num-virtual-tokens", "10", "--prompt-init", "text",
                    "--prompt-init-text", "Once upon a time"],
    "prefix": ["--method", "prefix", "--num-virtual-tokens", "5"],
    "ptuning": ["--method", "ptuning", "--num-virtual-tokens", "4", "--encoder-hidden", "48"],
}


def peft_real_logits(pm, ids):
    """peft's logits for the real tokens: prompt / P-tuning prepend num_virtual_tokens positions."""
    out = logits_of(pm, ids)
    cfg = pm.active_peft_config
    if cfg.peft_type != peft.PeftType.PREFIX_TUNING:
        out = out[cfg.num_virtual_tokens:]
    assert out.shape[0] == len(ids)
    return out


@pytest.mark.parametrize("variant", list(PROMPT_METHODS), ids=list(PROMPT_METHODS))
def test_llmopt_prompt_adapter_in_peft(llmopt, stories_bin, stories_tok, stories_hf, shakespeare, tmp_path, variant):
    adapter = tmp_path / "adapter"
    llmopt.run("finetune", stories_bin, "--tokenizer", stories_tok, "--data", shakespeare, "--seq-len", "64",
               "--batch-size", "4", "--steps", "6", "--lr", "1e-2", "--out", adapter, *PROMPT_METHODS[variant])
    cfg = peft.PeftConfig.from_pretrained(str(adapter))
    want = {"prompt": "PROMPT_TUNING", "prefix": "PREFIX_TUNING", "ptuning": "P_TUNING"}[variant.split("-")[0]]
    assert cfg.peft_type == want and cfg.task_type == "CAUSAL_LM"
    ids, ours = llmopt_logits(llmopt, stories_bin, stories_tok, tmp_path, "--adapter", adapter)
    base = logits_of(hf_model(stories_hf), ids)
    pm = peft.PeftModel.from_pretrained(hf_model(stories_hf), str(adapter))
    pm.eval()
    ref = peft_real_logits(pm, ids)
    effect = np.abs(ref - base).max()
    diff = np.abs(ours - ref).max()
    print(f"{variant}: adapter moves logits by {effect:.3g}; llmopt vs peft max |diff| = {diff:.3g}")
    assert effect > MIN_EFFECT
    assert diff <= LOGIT_TOL


def make_peft_prompt_config(method, stories_hf):
    if method == "prompt":
        return peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=7)
    if method == "prefix":
        return peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=6)
    return peft.PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=5, encoder_hidden_size=40)


@pytest.mark.parametrize("method", ["prompt", "prefix", "ptuning"])
def test_peft_prompt_adapter_in_llmopt(llmopt, stories_bin, stories_tok, stories_hf, tmp_path, method):
    torch.manual_seed(0)
    pm = peft.get_peft_model(hf_model(stories_hf), make_peft_prompt_config(method, stories_hf))
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    # transformers 4.44 turns peft 0.12's tuple of prefixes into a DynamicCache only outside training
    # mode (and with use_cache): train prefix tuning in eval mode (the model has no dropout; gradients
    # flow the same).
    pm.train(method != "prefix")
    for _ in range(5):
        batch = torch.randint(0, 512, (2, 33))
        loss = pm(input_ids=batch, labels=batch, use_cache=True).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    pm.eval()
    adapter = tmp_path / "peft-adapter"
    pm.save_pretrained(str(adapter))
    ids, ours = llmopt_logits(llmopt, stories_bin, stories_tok, tmp_path, "--adapter", adapter)
    ref = peft_real_logits(pm, ids)
    base = logits_of(hf_model(stories_hf), ids)
    effect = np.abs(ref - base).max()
    diff = np.abs(ours - ref).max()
    print(f"peft {method} adapter: moves logits by {effect:.3g}; llmopt vs peft max |diff| = {diff:.3g}")
    assert effect > MIN_EFFECT
    assert diff <= LOGIT_TOL


def test_prompt_text_init_equals_peft(llmopt, stories_bin, stories_tok, stories_hf, shakespeare, tmp_path):
    """Our --prompt-init text gives peft's prompt_tuning_init TEXT embeddings (BOS included, the ids
    repeated to 10 virtual tokens). lr 1e-12 for the one step llmopt must take: AdamW moves each
    value by at most lr (1e-12), far below the float32 comparison bound."""
    text = "Once upon a time"
    adapter = tmp_path / "adapter"
    llmopt.run("finetune", stories_bin, "--tokenizer", stories_tok, "--data", shakespeare, "--seq-len", "64",
               "--batch-size", "4", "--steps", "1", "--lr", "1e-12", "--out", adapter,
               *PROMPT_METHODS["prompt-text"])
    from safetensors.torch import load_file
    ours = load_file(str(adapter / "adapter_model.safetensors"))["prompt_embeddings"]
    cfg = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=10, prompt_tuning_init="TEXT",
                                  prompt_tuning_init_text=text, tokenizer_name_or_path=str(stories_hf))
    pm = peft.get_peft_model(hf_model(stories_hf), cfg)
    ref = pm.prompt_encoder["default"].embedding.weight.detach()
    assert ours.shape == ref.shape
    assert torch.abs(ours - ref).max().item() <= 1e-9


def run_exit_code(llmopt, *args):
    return subprocess.run([str(llmopt.exe), "-q", *[str(a) for a in args]], capture_output=True, text=True)


def test_prompt_adapter_bad_input_is_exit_2(llmopt, stories_bin, stories_tok, stories_hf, shakespeare, tmp_path):
    # num_virtual_tokens <= 0
    p = run_exit_code(llmopt, "finetune", stories_bin, "--tokenizer", stories_tok, "--data", shakespeare,
                      "--method", "prefix", "--num-virtual-tokens", "0", "--out", tmp_path / "x")
    assert p.returncode == 2, p.stderr
    assert "num-virtual-tokens" in p.stderr, p.stderr
    # A peft prefix adapter made for a base of another width (hidden 96, so token_dim 48 != 32).
    cfg = transformers.LlamaConfig(vocab_size=512, hidden_size=96, intermediate_size=172, num_hidden_layers=5,
                                   num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512)
    pm = peft.get_peft_model(transformers.LlamaForCausalLM(cfg),
                             peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    wide = tmp_path / "wide"
    pm.save_pretrained(str(wide))
    p = run_exit_code(llmopt, "logits", stories_bin, "--tokenizer", stories_tok, "--text", "Hello", "--adapter", wide)
    assert p.returncode == 2, p.stderr
    assert "token_dim" in p.stderr and "48" in p.stderr, p.stderr
    # One with more layers than the base (num_layers 6 vs 5).
    cfg.hidden_size, cfg.num_hidden_layers = 64, 6
    pm = peft.get_peft_model(transformers.LlamaForCausalLM(cfg),
                             peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    deep = tmp_path / "deep"
    pm.save_pretrained(str(deep))
    p = run_exit_code(llmopt, "logits", stories_bin, "--tokenizer", stories_tok, "--text", "Hello", "--adapter", deep)
    assert p.returncode == 2, p.stderr
    assert "num_layers" in p.stderr, p.stderr
