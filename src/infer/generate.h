// Autoregressive generation and the speed/memory benchmark, on any infer::Engine (the native CPU
// engine or model::TorchEngine): `llmopt generate|bench` and the evaluate stage's `speed` run
// these, so their figures come from the same loop.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "infer/engine.h"
#include "infer/llama_cpu.h"
#include "infer/sampling.h"

namespace llmopt::infer {

// Returns the new tokens (not the prompt). on_token(id) is called as each is produced; returning
// false stops early. Stops after stop_token too.
std::vector<int64_t> generate(const Engine& m, const std::vector<int64_t>& prompt, const SamplingOptions& o,
                              const std::function<bool(int64_t)>& on_token = {});

struct BenchOptions {
  int64_t prompt_tokens = 128;  // prefill length (0 = skip)
  int64_t gen_tokens = 64;      // decode length (0 = skip)
  int64_t repetitions = 3;
  int64_t warmup = 1;
  uint64_t seed = 0;
  int64_t batch = 1;  // sequences per step (each in its own cache, one after the other: the engines
                      // have no batched kernels); tok/s count the tokens of all sequences
};

struct BenchResult {
  double pp_tok_s = 0, pp_tok_s_sd = 0;
  double tg_tok_s = 0, tg_tok_s_sd = 0;
  int64_t threads = 0;
  int64_t model_bytes = 0;
  int64_t kv_cache_bytes = 0;
  int64_t peak_rss_bytes = 0;  // while prefilling and decoding (the peak is reset after loading)
  std::string engine;          // Engine::name(): "native" or "torch"
  double ttft_s = 0;           // mean prefill time of a measured repetition: the first token's logits
  std::vector<double> decode_step_s;  // every measured decode step (one token of each sequence)
};

// Nearest-rank percentile (q in [0, 100]) of the values; 0 when empty.
double percentile(std::vector<double> values, double q);

// Like llama-bench: prefill of prompt_tokens random tokens (logits of the last position), and
// decode of gen_tokens tokens from an empty cache, warmup + repetitions times.
// progress(label, rep, reps) is called before each repetition.
BenchResult run_bench(const Engine& m, const BenchOptions& o,
                      const std::function<void(const std::string&, int64_t, int64_t)>& progress = {});

// The measurement loop both engines share: warmup + repetitions of prefill(prompt) (random
// tokens in [0, vocab), cache emptied first) and of gen_tokens decode steps (decode(token) ->
// next token, greedy, from an empty cache), filling r's speed figures and its peak RSS (the
// peak counter is reset first). reset() empties the engine's cache.
struct BenchHooks {
  int64_t vocab = 0;
  std::function<void()> reset;
  std::function<void(const std::vector<int64_t>& prompt)> prefill;
  std::function<int64_t(int64_t token)> decode;
};
void run_bench_loop(const BenchOptions& o, const BenchHooks& h, BenchResult& r,
                    const std::function<void(const std::string&, int64_t, int64_t)>& progress);

}  // namespace llmopt::infer
