// Perplexity under three protocols, optionally streamed side by side with a baseline model to get
// KL divergence statistics without storing logits.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/llama.h"

namespace llmopt::eval {

enum class PerplexityProtocol {
  // llama.cpp `llama-perplexity`: whole text tokenized with BOS, cut into chunks of ctx tokens,
  // first token of each chunk replaced by BOS, only the second half of each chunk scored.
  LlamaCpp,
  // Non-overlapping windows of ctx tokens; every token after the first of a window is scored.
  Windows,
  // Overlapping windows advancing by stride; each token scored once with the longest context.
  Sliding,
};
PerplexityProtocol parse_protocol(const std::string& name);  // InputError lists valid names
std::string protocol_name(PerplexityProtocol p);

struct PerplexityOptions {
  PerplexityProtocol protocol = PerplexityProtocol::LlamaCpp;
  int64_t ctx = 512;
  int64_t stride = 0;        // sliding only; 0 = ctx/2
  int64_t batch = 1;         // windows evaluated per forward
  int64_t max_chunks = 0;    // 0 = all
  int64_t bos_id = 1;        // for LlamaCpp
};

struct PerplexityResult {
  double perplexity = 0;
  double nll_mean = 0;   // nats/token
  double nll_sd = 0;     // sd of per-token NLL
  int64_t tokens = 0;    // scored tokens
  int64_t chunks = 0;
  // With a baseline (KL(baseline || model) per scored token):
  bool has_baseline = false;
  double kld_mean = 0, kld_p99 = 0, kld_median = 0, kld_max = 0;
  double top1_agreement = 0;  // fraction of positions where argmax agrees
  double delta_p_rms = 0;     // RMS of p_model(correct) - p_base(correct)
  double baseline_perplexity = 0;
  double seconds = 0;
};

using ProgressFn = std::function<void(int64_t done, int64_t total)>;

// tokens: the whole text already tokenized (with BOS for LlamaCpp).
PerplexityResult evaluate_perplexity(model::LlamaModel& m, const std::vector<int64_t>& tokens,
                                     const PerplexityOptions& o, model::LlamaModel* baseline = nullptr,
                                     const ProgressFn& progress = {});

}  // namespace llmopt::eval
