// End-to-end speed and memory: prefill and decode tokens/s over repetitions.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "model/llama.h"

namespace llmopt::eval {

struct BenchOptions {
  int64_t prompt_tokens = 128;  // prefill length (0 = skip)
  int64_t gen_tokens = 64;      // decode length (0 = skip)
  int64_t repetitions = 3;
  int64_t warmup = 1;
  uint64_t seed = 0;
};

struct BenchResult {
  double pp_tok_s = 0, pp_tok_s_sd = 0;
  double tg_tok_s = 0, tg_tok_s_sd = 0;
  int64_t threads = 0;
  int64_t model_bytes = 0;
  int64_t kv_cache_bytes = 0;
  int64_t peak_rss_bytes = 0;
};

// progress(label, rep, reps) is called before each repetition.
BenchResult run_bench(model::LlamaModel& m, const BenchOptions& o,
                      const std::function<void(const std::string&, int64_t, int64_t)>& progress = {});

}  // namespace llmopt::eval
