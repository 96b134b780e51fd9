// Architecture hyper-parameters of a Llama-family decoder, independent of file format.
// Filled by the loaders in src/io, consumed by src/model. Field names follow HF config.json.
#pragma once
#include <cstdint>
#include <string>

namespace llmopt {

struct RopeScaling {
  // "none" or "llama3" (Llama-3.1 frequency-dependent scaling).
  std::string type = "none";
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string architecture = "LlamaForCausalLM";  // or MistralForCausalLM, Qwen2ForCausalLM
  int64_t hidden_size = 0;                        // dim
  int64_t intermediate_size = 0;                  // FFN hidden
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // GQA; == num_attention_heads for MHA
  int64_t head_dim = 0;             // usually hidden_size / num_attention_heads
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2)
  int64_t sliding_window = 0;   // Mistral: query q attends to keys q-W+1..q; 0 = none
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;

  // Throws InputError naming `source` if a field is missing/inconsistent.
  void validate(const std::string& source) const;
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
};

}  // namespace llmopt
