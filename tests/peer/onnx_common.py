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
    # The edit relies on the shape asked for above: fail here, not later in a confusing mismatch.
    assert (cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["num_hidden_layers"]) \
        == (96, 6, 2, 3), f"llmopt synth wrote another shape: {cfg}"
    assert cfg.get("tie_word_embeddings"), "llmopt synth --tied wrote an untied model"
    tensors = load_file(str(src / "model.safetensors"))
    rng = np.random.default_rng(5)
    for l in range(cfg["num_hidden_layers"]):
        for proj in ("q", "k", "v"):
            prefix = f"model.layers.{l}.self_attn.{proj}_proj"
            assert f"{prefix}.bias" not in tensors, f"{prefix}.bias already present"
            rows = tensors[f"{prefix}.weight"].shape[0]  # one bias per output row (q 96, k/v 32)
            tensors[f"{prefix}.bias"] = rng.normal(0, 0.5, rows).astype(np.float32)
    save_file(tensors, str(src / "model.safetensors"), metadata={"format": "pt"})
    return src
