#include "eval/perplexity.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/threads.h"
#include "core/timer.h"

namespace llmopt::eval {
namespace {

// One forward pass over tokens[start, start+len); positions >= first_scored predict the next
// token (targets tokens[start+p+1]). bos_first (llamacpp chunks) replaces the first token with
// the BOS id when the text uses one.
struct Window {
  int64_t start = 0;
  int64_t len = 0;
  int64_t first_scored = 0;  // index within the window of the first position whose prediction counts
  bool bos_first = false;
};

std::vector<Window> make_windows(int64_t n, const PerplexityOptions& o) {
  std::vector<Window> w;
  const int64_t ctx = o.ctx;
  LLMOPT_CHECK_INPUT(ctx >= 2, "[eval] --ctx must be at least 2, got {}", ctx);
  switch (o.protocol) {
    case PerplexityProtocol::LlamaCpp: {
      const int64_t chunks = n / ctx;
      LLMOPT_CHECK_INPUT(chunks >= 1, "[eval] llamacpp protocol needs at least ctx={} tokens, the text has {}", ctx, n);
      for (int64_t c = 0; c < chunks; ++c) w.push_back({c * ctx, ctx, ctx / 2, true});
      break;
    }
    case PerplexityProtocol::Windows:
      for (int64_t s = 0; s < n; s += ctx) {
        const int64_t len = std::min(ctx, n - s);
        if (len >= 2) w.push_back({s, len, 0, false});
      }
      break;
    case PerplexityProtocol::Sliding: {
      const int64_t stride = o.stride > 0 ? o.stride : std::max<int64_t>(1, ctx / 2);
      LLMOPT_CHECK_INPUT(stride <= ctx, "[eval] --stride {} must not exceed --ctx {}", stride, ctx);
      int64_t scored_until = 0;  // targets up to this index (exclusive) have been scored
      for (int64_t s = 0;; s += stride) {
        const int64_t end = std::min(s + ctx, n);
        if (end - s < 2) break;
        // Predictions at window positions p score target s+p+1; score targets >= max(scored_until, s+1).
        const int64_t first_target = std::max(scored_until, s + 1);
        if (first_target < end) w.push_back({s, end - s, first_target - 1 - s, false});
        scored_until = end;
        if (end == n) break;
      }
      break;
    }
  }
  if (o.max_chunks > 0 && static_cast<int64_t>(w.size()) > o.max_chunks) w.resize(o.max_chunks);
  return w;
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

}  // namespace

PerplexityProtocol parse_protocol(const std::string& name) {
  if (name == "llamacpp") return PerplexityProtocol::LlamaCpp;
  if (name == "windows") return PerplexityProtocol::Windows;
  if (name == "sliding") return PerplexityProtocol::Sliding;
  throw_input("[eval] unknown perplexity protocol '{}' (valid: llamacpp, windows, sliding)", name);
}

std::string protocol_name(PerplexityProtocol p) {
  switch (p) {
    case PerplexityProtocol::LlamaCpp: return "llamacpp";
    case PerplexityProtocol::Windows: return "windows";
    case PerplexityProtocol::Sliding: return "sliding";
  }
  return "?";
}

std::vector<int64_t> tokenize_for_perplexity(const tok::Tokenizer& tk, const std::string& text, PerplexityOptions& o,
                                             std::optional<bool> force) {
  const bool has_bos = tk.bos_id() >= 0;
  bool use = force.value_or(tk.add_bos_default() && has_bos);
  LLMOPT_CHECK_INPUT(!use || has_bos, "[eval] BOS was asked for but the tokenizer has no BOS token");
  tok::EncodeOptions eo;
  eo.add_bos = use;
  const std::vector<int32_t> ids32 = tk.encode(text, eo);
  o.bos_id = use ? tk.bos_id() : -1;
  return std::vector<int64_t>(ids32.begin(), ids32.end());
}

namespace {

// Per scored position: the model's NLL of the target and, with a baseline, KL(base || model),
// whether the argmaxes agree, the baseline's NLL. Float64 from float32 logits rows.
struct RowStats {
  double nll = 0, base_nll = 0, kld = 0;
  bool agree = false;
};

// log-sum-exp of a row, and its first argmax.
double log_sum_exp(const float* l, int64_t V, int64_t* argmax) {
  int64_t am = 0;
  for (int64_t j = 1; j < V; ++j)
    if (l[j] > l[am]) am = j;
  const double mx = l[am];
  double s = 0;
  for (int64_t j = 0; j < V; ++j) s += std::exp(static_cast<double>(l[j]) - mx);
  if (argmax) *argmax = am;
  return mx + std::log(s);
}

RowStats row_stats(const float* lm, const float* lb, int64_t V, int64_t target) {
  RowStats r;
  int64_t am = 0, ab = 0;
  const double lse_m = log_sum_exp(lm, V, &am);
  r.nll = lse_m - lm[target];
  if (lb == nullptr) return r;
  const double lse_b = log_sum_exp(lb, V, &ab);
  r.base_nll = lse_b - lb[target];
  double kld = 0;
  for (int64_t j = 0; j < V; ++j) {
    const double lpb = lb[j] - lse_b, lpm = lm[j] - lse_m;
    kld += std::exp(lpb) * (lpb - lpm);
  }
  r.kld = std::max(0.0, kld);
  r.agree = am == ab;
  return r;
}

}  // namespace

PerplexityResult evaluate_perplexity(const infer::Engine& m, const std::vector<int64_t>& tokens,
                                     const PerplexityOptions& o, const infer::Engine* baseline,
                                     const ProgressFn& progress) {
  Timer timer;
  const auto windows = make_windows(static_cast<int64_t>(tokens.size()), o);
  const int64_t vocab = m.config().vocab_size;
  if (baseline) {
    LLMOPT_CHECK_INPUT(baseline->config().vocab_size == vocab,
                       "[eval] baseline vocab size {} differs from the model's {}", baseline->config().vocab_size,
                       vocab);
  }
  for (int64_t t : tokens)
    LLMOPT_CHECK_INPUT(t >= 0 && t < vocab, "[eval] token id {} out of range for vocab size {}", t, vocab);
  LLMOPT_CHECK_INPUT(o.bos_id < vocab, "[eval] BOS id {} out of range for vocab size {}", o.bos_id, vocab);

  int64_t longest = 1;
  for (const auto& w : windows) longest = std::max(longest, w.len);
  auto cache = m.make_cache(longest);
  auto bcache = baseline ? baseline->make_cache(longest) : nullptr;
  std::vector<float> logits(static_cast<size_t>(longest * vocab)), blogits;
  if (baseline) blogits.resize(logits.size());
  std::vector<RowStats> rows;

  double sum_nll = 0, sum_nll2 = 0, sum_base_nll = 0, sum_dp2 = 0;
  int64_t count = 0, agree = 0;
  std::vector<double> klds;
  int64_t done = 0;
  for (const auto& w : windows) {
    std::vector<int64_t> ids(tokens.begin() + w.start, tokens.begin() + w.start + w.len);
    if (w.bos_first && o.bos_id >= 0) ids[0] = o.bos_id;
    cache->reset();
    m.prefill(ids.data(), w.len, *cache, logits.data(), /*all_positions=*/true);
    if (baseline) {
      bcache->reset();
      baseline->prefill(ids.data(), w.len, *bcache, blogits.data(), true);
    }
    // Predictions at positions first_scored .. len-2 score targets tokens[start + p + 1].
    const int64_t n_pred = w.len - 1 - w.first_scored;
    rows.assign(static_cast<size_t>(n_pred), RowStats{});
#pragma omp parallel for num_threads(threads()) schedule(static)
    for (int64_t i = 0; i < n_pred; ++i) {
      const int64_t p = w.first_scored + i;
      rows[i] = row_stats(logits.data() + p * vocab, baseline ? blogits.data() + p * vocab : nullptr, vocab,
                          tokens[w.start + p + 1]);
    }
    for (const RowStats& r : rows) {  // in order: sums independent of the thread count
      sum_nll += r.nll;
      sum_nll2 += r.nll * r.nll;
      if (baseline) {
        klds.push_back(r.kld);
        agree += r.agree ? 1 : 0;
        sum_base_nll += r.base_nll;
        const double dp = std::exp(-r.nll) - std::exp(-r.base_nll);
        sum_dp2 += dp * dp;
      }
    }
    count += n_pred;
    ++done;
    if (progress) progress(done, static_cast<int64_t>(windows.size()));
  }
  PerplexityResult r;
  r.tokens = count;
  r.chunks = static_cast<int64_t>(windows.size());
  LLMOPT_CHECK_INPUT(count > 0, "[eval] no tokens were scored (text too short for ctx={})", o.ctx);
  r.nll_mean = sum_nll / static_cast<double>(count);
  r.nll_sd = std::sqrt(std::max(0.0, sum_nll2 / static_cast<double>(count) - r.nll_mean * r.nll_mean));
  r.perplexity = std::exp(r.nll_mean);
  if (baseline) {
    r.has_baseline = true;
    double s = 0, mx = 0;
    for (double k : klds) {
      s += k;
      mx = std::max(mx, k);
    }
    r.kld_mean = s / static_cast<double>(klds.size());
    r.kld_p99 = percentile(klds, 0.99);
    r.kld_median = percentile(klds, 0.5);
    r.kld_max = mx;
    r.top1_agreement = static_cast<double>(agree) / static_cast<double>(count);
    r.delta_p_rms = std::sqrt(sum_dp2 / static_cast<double>(count));
    r.baseline_perplexity = std::exp(sum_base_nll / static_cast<double>(count));
  }
  r.seconds = timer.seconds();
  return r;
}

nlohmann::json protocol_json(const PerplexityOptions& o, const PerplexityResult& r, const infer::Engine& m) {
  nlohmann::json j = {{"protocol", protocol_name(o.protocol)},
                      {"ctx", o.ctx},
                      {"bos", o.bos_id >= 0},
                      {"bos_id", o.bos_id},
                      {"chunks", r.chunks},
                      {"tokens", r.tokens},
                      {"engine", m.name()}};
  if (o.protocol == PerplexityProtocol::Sliding)
    j["stride"] = o.stride > 0 ? o.stride : std::max<int64_t>(1, o.ctx / 2);
  return j;
}

}  // namespace llmopt::eval
