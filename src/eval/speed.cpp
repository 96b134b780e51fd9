#include "eval/speed.h"

#include <cmath>

#include "core/memory.h"
#include "core/threads.h"
#include "core/timer.h"

namespace llmopt::eval {
namespace {
void mean_sd(const std::vector<double>& v, double& mean, double& sd) {
  mean = 0;
  sd = 0;
  if (v.empty()) return;
  for (double x : v) mean += x;
  mean /= static_cast<double>(v.size());
  if (v.size() > 1) {
    for (double x : v) sd += (x - mean) * (x - mean);
    sd = std::sqrt(sd / static_cast<double>(v.size() - 1));
  }
}
}  // namespace

BenchResult run_bench(model::LlamaModel& m, const BenchOptions& o,
                      const std::function<void(const std::string&, int64_t, int64_t)>& progress) {
  torch::NoGradGuard no_grad;
  BenchResult r;
  r.threads = threads();
  r.model_bytes = m.storage_bytes();
  const int64_t V = m.config().vocab_size;
  auto gen = at::detail::createCPUGenerator(o.seed);
  const auto dev = m.device();
  const int64_t cap = std::max<int64_t>(1, std::max(o.prompt_tokens, o.gen_tokens + 1));
  auto cache = m.make_cache(1, cap);
  r.kv_cache_bytes = cache.bytes();
  reset_peak_rss();
  std::vector<double> pp, tg;
  const int64_t total = o.warmup + o.repetitions;
  for (int64_t rep = 0; rep < total; ++rep) {
    const bool measured = rep >= o.warmup;
    if (o.prompt_tokens > 0) {
      if (progress) progress(measured ? "pp" : "warmup pp", rep, total);
      auto prompt = torch::randint(0, V, {1, o.prompt_tokens}, gen, torch::kLong).to(dev);
      cache.length = 0;
      Timer t;
      // Like llama-bench (and any generator), prefill needs the logits of the last position only.
      auto hidden = m.forward_hidden(prompt, &cache);
      auto logits = m.logits_from_hidden(hidden.narrow(1, o.prompt_tokens - 1, 1));
      (void)logits.sum().item<float>();  // synchronize
      if (measured) pp.push_back(static_cast<double>(o.prompt_tokens) / t.seconds());
    }
    if (o.gen_tokens > 0) {
      if (progress) progress(measured ? "tg" : "warmup tg", rep, total);
      cache.length = 0;
      int64_t tok = 1;
      Timer t;
      for (int64_t i = 0; i < o.gen_tokens; ++i) {
        auto logits = m.forward(torch::full({1, 1}, tok, torch::TensorOptions().dtype(torch::kLong).device(dev)), &cache);
        tok = logits[0][0].argmax().item<int64_t>();
      }
      if (measured) tg.push_back(static_cast<double>(o.gen_tokens) / t.seconds());
    }
  }
  mean_sd(pp, r.pp_tok_s, r.pp_tok_s_sd);
  mean_sd(tg, r.tg_tok_s, r.tg_tok_s_sd);
  r.peak_rss_bytes = peak_rss_bytes();
  return r;
}

}  // namespace llmopt::eval
