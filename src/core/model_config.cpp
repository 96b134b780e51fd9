#include "core/model_config.h"

#include "core/error.h"

namespace llmopt {

void ModelConfig::validate(const std::string& source) const {
  auto positive = [&](int64_t v, const char* name) {
    LLMOPT_CHECK_INPUT(v > 0 && v < (int64_t{1} << 31), "[config] {}: {} must be a positive integer, found {}",
                       source, name, v);
  };
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_hidden_layers, "num_hidden_layers");
  positive(num_attention_heads, "num_attention_heads");
  positive(num_key_value_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  positive(vocab_size, "vocab_size");
  LLMOPT_CHECK_INPUT(num_attention_heads % num_key_value_heads == 0,
                     "[config] {}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                     source, num_attention_heads, num_key_value_heads);
  LLMOPT_CHECK_INPUT(head_dim % 2 == 0, "[config] {}: head_dim must be even for RoPE, found {}", source,
                     head_dim);
  LLMOPT_CHECK_INPUT(rms_norm_eps > 0 && rms_norm_eps < 1, "[config] {}: rms_norm_eps out of range: {}",
                     source, rms_norm_eps);
  LLMOPT_CHECK_INPUT(rope_theta > 0, "[config] {}: rope_theta must be positive, found {}", source,
                     rope_theta);
}

}  // namespace llmopt
