"""Pieces shared by the ONNX peer tests (test_onnx.py, test_onnx_optimized.py)."""
import json

import numpy as np


def model_config(d):
    return json.loads((d / "config.json").read_text())


def make_biased_llama3_synth(llmopt, tmp):
    """`llmopt synth` of another shape (GQA 6/2, tied, FFN 200) given q/k/v biases and Llama-3 RoPE
    scaling (theta 5e5, factor 8 over an original context of 64, so the scaled band covers the test
    positions) by editing its config.json and safetensors; returns the HF directory."""
    from safetensors.numpy import load_file, save_file
    src = tmp / "synth"
    llmopt.run("synth", src, "--dim", 96, "--ffn", 200, "--layers", 3, "--heads", 6, "--kv-heads", 2,
               "--vocab", 300, "--tied", "--seed", 11)
    cfg = model_config(src)
    cfg.update(attention_bias=True, rope_theta=500000.0,
               rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    (src / "config.json").write_text(json.dumps(cfg, indent=2))
    tensors = load_file(str(src / "model.safetensors"))
    rng = np.random.default_rng(5)
    for l in range(cfg["num_hidden_layers"]):
        for proj, rows in (("q", 96), ("k", 32), ("v", 32)):
            tensors[f"model.layers.{l}.self_attn.{proj}_proj.bias"] = rng.normal(0, 0.5, rows).astype(np.float32)
    save_file(tensors, str(src / "model.safetensors"), metadata={"format": "pt"})
    return src
