#include "infer/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace llmopt::infer {

int64_t Sampler::sample(const float* logits, int64_t V, const SamplingOptions& o) {
  LLMOPT_CHECK_INPUT(V > 0, "[generate] empty logits");
  if (o.temperature <= 0.0) return std::max_element(logits, logits + V) - logits;
  const int64_t k = (o.top_k > 0 && o.top_k < V) ? o.top_k : V;
  idx_.resize(static_cast<size_t>(V));
  std::iota(idx_.begin(), idx_.end(), int64_t{0});
  // Descending by logit, ties by index (a total order: the draw does not depend on the sort).
  auto before = [&](int64_t a, int64_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::partial_sort(idx_.begin(), idx_.begin() + k, idx_.end(), before);
  p_.resize(static_cast<size_t>(k));
  const double mx = logits[idx_[0]] / o.temperature;
  double sum = 0;
  for (int64_t i = 0; i < k; ++i) sum += (p_[i] = std::exp(logits[idx_[i]] / o.temperature - mx));
  int64_t keep = k;
  if (o.top_p < 1.0) {
    // Keep the smallest prefix whose mass reaches top_p (always at least one token).
    double cum = 0;
    for (int64_t i = 0; i < k; ++i) {
      if (cum >= o.top_p * sum) {
        keep = i;
        break;
      }
      cum += p_[i];
    }
    keep = std::max<int64_t>(keep, 1);
    sum = std::accumulate(p_.begin(), p_.begin() + keep, 0.0);
  }
  const double r = std::uniform_real_distribution<double>(0.0, sum)(rng_);
  double cum = 0;
  for (int64_t i = 0; i < keep; ++i) {
    cum += p_[i];
    if (r < cum) return idx_[i];
  }
  return idx_[keep - 1];
}

}  // namespace llmopt::infer
