// Hugging Face config.json <-> ModelConfig for LlamaForCausalLM, MistralForCausalLM and
// Qwen2ForCausalLM. Defaults follow the transformers config classes (num_key_value_heads =
// num_attention_heads, head_dim = hidden_size / num_attention_heads, rms_norm_eps = 1e-6 ...).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "core/dtype.h"
#include "core/model_config.h"

namespace llmopt::io {

// `source` names the file in error messages ("[config] DIR/config.json: missing field 'x'").
ModelConfig parse_hf_config(const nlohmann::json& j, const std::string& source);
ModelConfig read_hf_config(const std::string& path);

// A config.json that transformers loads: architectures, model_type, torch_dtype, every field of
// ModelConfig under its HF name.
nlohmann::ordered_json hf_config_json(const ModelConfig& cfg, DType torch_dtype);
void write_hf_config(const std::string& path, const ModelConfig& cfg, DType torch_dtype);

// "LlamaForCausalLM" -> "llama", "MistralForCausalLM" -> "mistral", "Qwen2ForCausalLM" -> "qwen2".
std::string hf_model_type(const std::string& architecture);

}  // namespace llmopt::io
