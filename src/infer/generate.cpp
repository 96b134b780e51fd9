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

double percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::ceil(q / 100.0 * static_cast<double>(values.size()));
  const size_t i = static_cast<size_t>(std::clamp<double>(rank, 1, static_cast<double>(values.size()))) - 1;
  return values[i];
}

void run_bench_loop(const BenchOptions& o, const BenchHooks& h, BenchResult& r,
                    const std::function<void(const std::string&, int64_t, int64_t)>& progress) {
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int64_t> tok(0, h.vocab - 1);
  std::vector<int64_t> prompt(static_cast<size_t>(o.prompt_tokens));
  reset_peak_rss();
  std::vector<double> pp, tg, pp_sec;
  r.decode_step_s.clear();
  const int64_t total = o.warmup + o.repetitions;
  for (int64_t rep = 0; rep < total; ++rep) {
    const bool measured = rep >= o.warmup;
    if (o.prompt_tokens > 0) {
      if (progress) progress(measured ? "pp" : "warmup pp", rep, total);
      for (auto& t : prompt) t = tok(rng);
      h.reset();
      Timer t;
      h.prefill(prompt);
      const double sec = t.seconds();
      if (measured) {
        pp.push_back(static_cast<double>(o.prompt_tokens * o.batch) / sec);
        pp_sec.push_back(sec);
      }
    }
    if (o.gen_tokens > 0) {
      if (progress) progress(measured ? "tg" : "warmup tg", rep, total);
      h.reset();
      int64_t next = std::min<int64_t>(1, h.vocab - 1);
      Timer t;
      double last = 0;
      for (int64_t i = 0; i < o.gen_tokens; ++i) {
        next = h.decode(next);
        if (measured) {
          const double now = t.seconds();
          r.decode_step_s.push_back(now - last);
          last = now;
        }
      }
      if (measured) tg.push_back(static_cast<double>(o.gen_tokens * o.batch) / t.seconds());
    }
  }
  mean_sd(pp, r.pp_tok_s, r.pp_tok_s_sd);
  mean_sd(tg, r.tg_tok_s, r.tg_tok_s_sd);
  double sd = 0;
  mean_sd(pp_sec, r.ttft_s, sd);
  r.threads = threads();
  r.peak_rss_bytes = peak_rss_bytes();
}

BenchResult run_bench(const Engine& m, const BenchOptions& o,
                      const std::function<void(const std::string&, int64_t, int64_t)>& progress) {
  BenchResult r;
  r.engine = m.name();
  r.model_bytes = m.weight_bytes();
  const int64_t V = m.config().vocab_size;
  LLMOPT_CHECK_INPUT(o.batch >= 1, "[bench] batch {} must be at least 1", o.batch);
  // One cache per sequence of the batch.
  const int64_t cap = std::max<int64_t>(1, std::max(o.prompt_tokens, o.gen_tokens + 1));
  std::vector<std::unique_ptr<EngineCache>> caches;
  for (int64_t b = 0; b < o.batch; ++b) caches.push_back(m.make_cache(cap));
  r.kv_cache_bytes = caches[0]->bytes() * o.batch;
  std::vector<float> logits(static_cast<size_t>(V));
  std::vector<int64_t> nexts(static_cast<size_t>(o.batch), 0);
  BenchHooks h;
  h.vocab = V;
  h.reset = [&] {
    for (auto& c : caches) c->reset();
    std::fill(nexts.begin(), nexts.end(), std::min<int64_t>(1, V - 1));  // run_bench_loop's first token
  };
  h.prefill = [&](const std::vector<int64_t>& p) {
    for (auto& c : caches) m.prefill(p.data(), static_cast<int64_t>(p.size()), *c, logits.data());
  };
  h.decode = [&](int64_t t) {
    for (size_t b = 0; b < caches.size(); ++b) {
      m.decode(b == 0 ? t : nexts[b], *caches[b], logits.data());
      nexts[b] = static_cast<int64_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
    return nexts[0];
  };
  run_bench_loop(o, h, r, progress);
  return r;
}

}  // namespace llmopt::infer
