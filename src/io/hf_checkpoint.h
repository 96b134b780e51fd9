// Hugging Face model directories: config.json + model.safetensors (or a sharded
// model.safetensors.index.json), tokenizer.json or tokenizer.model. GPTQ directories as auto-gptq
// saves them load too: quantize_config.json (its quantization_config when config.json has none)
// and weights named by its model_file_base_name or the directory's only *.safetensors
// (gptq_model-4bit-128g.safetensors) / *.safetensors.index.json; several candidates: exit 2.
#pragma once
#include <string>

#include "io/checkpoint.h"

namespace llmopt::io {

Checkpoint load_hf_dir(const std::string& dir);

// Writes config.json and model.safetensors (tensors converted to `out_type`: F32, F16 or BF16;
// lm_head omitted when embeddings are tied) into `dir`, created if missing. Each file is written
// atomically. Tokenizer files are the caller's business.
void write_hf(const Checkpoint& ckpt, const std::string& dir, DType out_type);

}  // namespace llmopt::io
