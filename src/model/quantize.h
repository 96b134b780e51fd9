// Round-to-nearest quantization of a model's projections into packed layers (model::PackedLinear):
// shared by the `quantize` stage and `llmopt quantize`.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/llama.h"

namespace llmopt::model {

struct QuantizeSpec {
  std::string format = "q8_0";               // ggml block type or f16/bf16
  std::string fallback = "f16";              // for rows that are not whole blocks; "error" refuses
  std::vector<std::string> skip = {"lm_head"};  // regexes searched in module paths
};

struct QuantizeReport {
  int64_t quantized = 0, fallback = 0, skipped = 0;
  // Bits per weight over every projection's weight as stored (scales included, biases not).
  double linear_bits_per_weight = 0;
  std::vector<std::string> fallback_layers;
};

// InputError naming the option for an unknown format, a format without a quantizer, or a bad
// regular expression.
void check_quantize_spec(const QuantizeSpec& spec);
QuantizeReport quantize_rtn(LlamaModel& m, const QuantizeSpec& spec,
                            const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace llmopt::model
