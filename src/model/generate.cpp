#include "model/generate.h"

#include "core/error.h"

namespace llmopt::model {

int64_t sample_token(const torch::Tensor& logits_in, const SamplingOptions& o, Sampler& sampler) {
  auto logits = logits_in.to(torch::kCPU, torch::kFloat32).contiguous().flatten();
  return sampler.sample(logits.data_ptr<float>(), logits.size(0), o);
}

std::vector<int64_t> generate(LlamaModel& m, const std::vector<int64_t>& prompt, const SamplingOptions& o,
                              const std::function<bool(int64_t)>& on_token) {
  LLMOPT_CHECK_INPUT(!prompt.empty(), "[generate] the prompt is empty (no tokens)");
  torch::NoGradGuard no_grad;
  Sampler sampler(o.seed);
  const int64_t cap = static_cast<int64_t>(prompt.size()) + o.max_new_tokens;
  auto cache = m.make_cache(1, cap);
  auto dev = m.device();
  auto input = torch::tensor(prompt, torch::kLong).view({1, -1}).to(dev);
  std::vector<int64_t> out;
  // Prefill: only the last position's logits are needed to pick the first new token.
  auto logits = m.logits_from_hidden(m.forward_hidden(input, &cache).narrow(1, input.size(1) - 1, 1));  // [1, 1, V]
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    const int64_t next = sample_token(logits[0][-1], o, sampler);
    out.push_back(next);
    if (on_token && !on_token(next)) break;
    if (next == o.stop_token) break;
    if (step + 1 == o.max_new_tokens) break;
    logits = m.forward(torch::full({1, 1}, next, torch::TensorOptions().dtype(torch::kLong).device(dev)), &cache);
  }
  return out;
}

}  // namespace llmopt::model
