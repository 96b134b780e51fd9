"""Peer check: LoRA adapters interoperate with Hugging Face peft.

1. An adapter trained by `llmopt finetune` on the llama2.c stories260K (PEFT key names and
   adapter_config.json) loads with peft.PeftModel onto transformers' LlamaForCausalLM built from our
   HF export of the same base (`llmopt convert --to hf`): the logits equal `llmopt logits
   --adapter` (LoRA, rsLoRA, DoRA, a regex target set).
2. An adapter made by peft itself (get_peft_model, a few optimizer steps so lora_B is not zero,
   save_pretrained) loads in llmopt with the same logits as peft gives.
3. `llmopt finetune` killed with SIGKILL mid-run, then run again with --resume, writes an adapter
   byte-identical to an uninterrupted run.

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


def test_kill_9_then_resume_gives_identical_adapter(llmopt, stories_bin, stories_tok, shakespeare, tmp_path):
    args = ["finetune", str(stories_bin), "--tokenizer", str(stories_tok), "--data", str(shakespeare),
            "--seq-len", "64", "--batch-size", "4", "--steps", "40", "--lr", "5e-3", "--dropout", "0.1",
            "--save-every", "5", "--dora", "--warmup", "3"]
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
