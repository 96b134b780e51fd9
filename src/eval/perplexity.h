// Perplexity under three protocols on any infer::Engine (the native CPU engine or the torch
// engine), optionally streamed side by side with a baseline engine to get KL divergence
// statistics without storing logits. `llmopt eval` and the pipeline's `evaluate` stage both run
// tokenize_for_perplexity + evaluate_perplexity, so they report the same numbers for the same
// model, text and options.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "infer/engine.h"
#include "tokenizer/tokenizer.h"

namespace llmopt::eval {

enum class PerplexityProtocol {
  // llama.cpp `llama-perplexity`: the whole text tokenized (with BOS when the model's tokenizer
  // adds one), cut into n_tokens / ctx chunks of ctx tokens, the first token of each chunk
  // replaced by BOS (only when BOS is used: llama.cpp leaves it as it is otherwise), only the
  // second half of each chunk scored (positions ctx/2 .. ctx-2 predicting the next token).
  LlamaCpp,
  // Non-overlapping windows of ctx tokens; every token after the first of a window is scored.
  Windows,
  // Windows of ctx tokens starting every `stride` tokens; each token is scored once, in the first
  // window that contains it after its first position (the longest context this window grid gives).
  Sliding,
};
PerplexityProtocol parse_protocol(const std::string& name);  // InputError lists valid names
std::string protocol_name(PerplexityProtocol p);

struct PerplexityOptions {
  PerplexityProtocol protocol = PerplexityProtocol::LlamaCpp;
  int64_t ctx = 512;
  int64_t stride = 0;      // sliding only; 0 = ctx/2
  int64_t max_chunks = 0;  // 0 = all
  // BOS id used by the text (set by tokenize_for_perplexity); -1 = no BOS. With LlamaCpp the
  // first token of each chunk is replaced by it when ≥ 0 and left as it is when -1.
  int64_t bos_id = -1;
};

// The one BOS rule of `llmopt eval` and the evaluate stage, that of llama.cpp's
// llama-perplexity: BOS is used when the tokenizer adds one by default (add_bos_default() and a
// BOS id); `force` (the CLI's --bos / --no-bos) overrides it. Used: the text is tokenized with
// BOS first and o.bos_id is set to it (llamacpp chunks then start with BOS); not used: no BOS
// anywhere and o.bos_id = -1. InputError when BOS is forced but the tokenizer has none.
std::vector<int64_t> tokenize_for_perplexity(const tok::Tokenizer& tk, const std::string& text,
                                             PerplexityOptions& o, std::optional<bool> force = std::nullopt);

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

// tokens: the whole text, from tokenize_for_perplexity (which sets o.bos_id). Each window is
// one prefill of an empty cache with all positions' logits; log-softmax, NLL and KL divergence
// are computed in float64 from the engines' float32 logits.
PerplexityResult evaluate_perplexity(const infer::Engine& m, const std::vector<int64_t>& tokens,
                                     const PerplexityOptions& o, const infer::Engine* baseline = nullptr,
                                     const ProgressFn& progress = {});

// What was measured and how, for JSON outputs (CLI --json and the stage's metrics): protocol,
// ctx, stride (sliding), bos (used or not), bos_id, chunks, tokens, engine.
nlohmann::json protocol_json(const PerplexityOptions& o, const PerplexityResult& r, const infer::Engine& m);

}  // namespace llmopt::eval
