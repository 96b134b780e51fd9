// Picking the next token from logits: greedy, temperature, top-k, top-p, seeded. Torch-free so
// that both engines (model::generate on libtorch, infer::generate on CpuLlama) draw the same
// tokens from the same logits and seed.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace llmopt::infer {

struct SamplingOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = off
  double top_p = 1.0;        // 1 = off
  uint64_t seed = 0;
  int64_t stop_token = -1;   // e.g. EOS; -1 = none
};

class Sampler {
 public:
  explicit Sampler(uint64_t seed) : rng_(seed) {}
  // Greedy (temperature 0): the first index of the largest logit. Otherwise softmax(logits / T)
  // over the top-k (all if 0), truncated to the smallest prefix (by descending probability)
  // whose mass reaches top_p, renormalized, and one draw from it.
  int64_t sample(const float* logits, int64_t vocab, const SamplingOptions& o);

 private:
  std::mt19937_64 rng_;
  std::vector<int64_t> idx_;
  std::vector<double> p_;
};

}  // namespace llmopt::infer
