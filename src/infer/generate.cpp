#include "infer/generate.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "core/error.h"
#include "core/memory.h"
#include "core/threads.h"
#include "core/timer.h"

namespace llmopt::infer {

std::vector<int64_t> generate(const Engine& m, const std::vector<int64_t>& prompt, const SamplingOptions& o,
                              const std::function<bool(int64_t)>& on_token) {
  LLMOPT_CHECK_INPUT(!prompt.empty(), "[generate] the prompt is empty (no tokens)");
  const int64_t V = m.config().vocab_size;
  auto cache = m.make_cache(static_cast<int64_t>(prompt.size()) + std::max<int64_t>(o.max_new_tokens, 1));
  std::vector<float> logits(static_cast<size_t>(V));
  Sampler sampler(o.seed);
  std::vector<int64_t> out;
  m.prefill(prompt.data(), static_cast<int64_t>(prompt.size()), *cache, logits.data());
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    const int64_t next = sampler.sample(logits.data(), V, o);
    out.push_back(next);
    if (on_token && !on_token(next)) break;
    if (next == o.stop_token) break;
    if (step + 1 == o.max_new_tokens) break;
    m.decode(next, *cache, logits.data());
  }
  return out;
}

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

void run_bench_loop(const BenchOptions& o, const BenchHooks& h, BenchResult& r,
                    const std::function<void(const std::string&, int64_t, int64_t)>& progress) {
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int64_t> tok(0, h.vocab - 1);
  std::vector<int64_t> prompt(static_cast<size_t>(o.prompt_tokens));
  reset_peak_rss();
  std::vector<double> pp, tg;
  const int64_t total = o.warmup + o.repetitions;
  for (int64_t rep = 0; rep < total; ++rep) {
    const bool measured = rep >= o.warmup;
    if (o.prompt_tokens > 0) {
      if (progress) progress(measured ? "pp" : "warmup pp", rep, total);
      for (auto& t : prompt) t = tok(rng);
      h.reset();
      Timer t;
      h.prefill(prompt);
      if (measured) pp.push_back(static_cast<double>(o.prompt_tokens) / t.seconds());
    }
    if (o.gen_tokens > 0) {
      if (progress) progress(measured ? "tg" : "warmup tg", rep, total);
      h.reset();
      int64_t next = std::min<int64_t>(1, h.vocab - 1);
      Timer t;
      for (int64_t i = 0; i < o.gen_tokens; ++i) next = h.decode(next);
      if (measured) tg.push_back(static_cast<double>(o.gen_tokens) / t.seconds());
    }
  }
  mean_sd(pp, r.pp_tok_s, r.pp_tok_s_sd);
  mean_sd(tg, r.tg_tok_s, r.tg_tok_s_sd);
  r.threads = threads();
  r.peak_rss_bytes = peak_rss_bytes();
}

BenchResult run_bench(const Engine& m, const BenchOptions& o,
                      const std::function<void(const std::string&, int64_t, int64_t)>& progress) {
  BenchResult r;
  r.engine = m.name();
  r.model_bytes = m.weight_bytes();
  const int64_t V = m.config().vocab_size;
  auto cache = m.make_cache(std::max<int64_t>(1, std::max(o.prompt_tokens, o.gen_tokens + 1)));
  r.kv_cache_bytes = cache->bytes();
  std::vector<float> logits(static_cast<size_t>(V));
  BenchHooks h;
  h.vocab = V;
  h.reset = [&] { cache->reset(); };
  h.prefill = [&](const std::vector<int64_t>& p) {
    m.prefill(p.data(), static_cast<int64_t>(p.size()), *cache, logits.data());
  };
  h.decode = [&](int64_t t) {
    m.decode(t, *cache, logits.data());
    return static_cast<int64_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  };
  run_bench_loop(o, h, r, progress);
  return r;
}

}  // namespace llmopt::infer
