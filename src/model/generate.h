// Autoregressive generation with a KV cache: greedy, temperature, top-k, top-p, seeded.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "model/llama.h"

namespace llmopt::model {

struct SamplingOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = off
  double top_p = 1.0;        // 1 = off
  uint64_t seed = 0;
  int64_t stop_token = -1;   // e.g. EOS; -1 = none
};

// Picks the next token from logits [vocab] (f32, CPU). rng state is advanced.
int64_t sample_token(const torch::Tensor& logits, const SamplingOptions& o, torch::Generator& rng);

// Returns the new tokens (not including the prompt). on_token(id) is called as each is produced;
// returning false stops early.
std::vector<int64_t> generate(LlamaModel& m, const std::vector<int64_t>& prompt,
                              const SamplingOptions& o,
                              const std::function<bool(int64_t)>& on_token = {});

}  // namespace llmopt::model
