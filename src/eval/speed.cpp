#include "eval/speed.h"

namespace llmopt::eval {

BenchResult run_bench(model::LlamaModel& m, const BenchOptions& o,
                      const std::function<void(const std::string&, int64_t, int64_t)>& progress) {
  torch::NoGradGuard no_grad;
  BenchResult r;
  r.engine = "torch";
  r.model_bytes = m.storage_bytes();
  const auto dev = m.device();
  auto cache = m.make_cache(1, std::max<int64_t>(1, std::max(o.prompt_tokens, o.gen_tokens + 1)));
  r.kv_cache_bytes = cache.bytes();
  infer::BenchHooks h;
  h.vocab = m.config().vocab_size;
  h.reset = [&] { cache.length = 0; };
  h.prefill = [&](const std::vector<int64_t>& p) {
    auto prompt = torch::tensor(p, torch::kLong).view({1, -1}).to(dev);
    // Like llama-bench (and any generator), prefill needs the logits of the last position only.
    auto hidden = m.forward_hidden(prompt, &cache);
    auto logits = m.logits_from_hidden(hidden.narrow(1, prompt.size(1) - 1, 1));
    (void)logits.sum().item<float>();  // synchronize
  };
  h.decode = [&](int64_t tok) {
    auto logits = m.forward(torch::full({1, 1}, tok, torch::TensorOptions().dtype(torch::kLong).device(dev)), &cache);
    return logits[0][0].argmax().item<int64_t>();
  };
  infer::run_bench_loop(o, h, r, progress);
  return r;
}

}  // namespace llmopt::eval
