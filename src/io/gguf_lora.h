// LoRA adapters as llama.cpp reads them (`--lora FILE`, llama_adapter_lora_init in
// src/llama-adapter.cpp of llama.cpp; written by its convert_lora_to_gguf.py):
//
//   general.architecture   the base model's architecture ("llama" for llmopt's own GGUF exports);
//                          llama.cpp refuses an adapter whose architecture differs from the model's
//   general.type           "adapter"
//   adapter.type           "lora"
//   adapter.lora.alpha     f32; llama.cpp scales each pair by alpha / r, r = that pair's rank
//   blk.N.<proj>.weight.lora_a   ggml ne [in, r]  (torch [r, in]:  PEFT's lora_A.weight as is)
//   blk.N.<proj>.weight.lora_b   ggml ne [r, out] (torch [out, r]: PEFT's lora_B.weight as is)
//
// llama.cpp computes W·x + (alpha / r)·B·(A·x) with W as the GGUF holds it. For architecture
// "llama" the GGUF holds q/k rows in the interleaved RoPE order (io/architecture.h's permutation),
// so B's rows of q/k are permuted exactly as W's rows are; A (columns) is untouched. Other
// architectures (qwen2) keep HF order. Tensors are stored as F32 (exact) or F16.
// Torch-free.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/model_config.h"

namespace llmopt::io {

struct GgufLoraPair {
  std::string module_path;  // HF module path: "model.layers.3.self_attn.q_proj", "lm_head"
  int64_t r = 0;
  std::vector<float> A;  // [r, in] row-major (PEFT lora_A.weight)
  std::vector<float> B;  // [out, r] row-major (PEFT lora_B.weight), rows in HF (rotate-half) order
};

struct GgufLoraAdapter {
  std::string architecture = "llama";  // general.architecture of the base GGUF it applies to
  float alpha = 0;                      // adapter.lora.alpha (0: llama.cpp then scales by 1)
  std::vector<GgufLoraPair> pairs;
};

// Whether GGUF files of `architecture` hold q/k rows permuted into the interleaved RoPE order
// (true for "llama", as convert_hf_to_gguf.py and llmopt's GGUF writer do; false for "qwen2").
bool gguf_permutes_qk(const std::string& architecture);

// Writes `a` for a base of shape `cfg` to `path` (atomically). `type`: F32 or F16. InputError
// naming the module for a module path the architecture description does not know, A/B sizes that
// do not fit cfg, an lm_head adapter on a model with tied embeddings (llama.cpp's GGUF has no
// output.weight then), or an architecture other than llama / mistral / qwen2.
void write_gguf_lora(const std::string& path, const ModelConfig& cfg, const GgufLoraAdapter& a,
                     DType type = DType::F32);

// Reads a GGUF LoRA adapter written by llmopt or convert_lora_to_gguf.py for a base of shape
// `cfg`: B rows back in HF order. InputError naming the file/tensor for a general.type other than
// "adapter", adapter.type other than "lora", an unknown tensor name, a missing half of a pair or a
// shape that does not fit.
GgufLoraAdapter read_gguf_lora(const std::string& path, const ModelConfig& cfg);

}  // namespace llmopt::io
