// Autoregressive generation with a KV cache: greedy, temperature, top-k, top-p, seeded.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "infer/sampling.h"
#include "model/llama.h"

namespace llmopt::model {

// The sampler is the CPU engine's (src/infer), so both engines draw the same tokens.
using SamplingOptions = infer::SamplingOptions;
using infer::Sampler;

// Picks the next token from logits [vocab] (any device); the sampler's state is advanced.
int64_t sample_token(const torch::Tensor& logits, const SamplingOptions& o, Sampler& sampler);

// Returns the new tokens (not including the prompt). on_token(id) is called as each is produced;
// returning false stops early.
std::vector<int64_t> generate(LlamaModel& m, const std::vector<int64_t>& prompt,
                              const SamplingOptions& o,
                              const std::function<bool(int64_t)>& on_token = {});

}  // namespace llmopt::model
