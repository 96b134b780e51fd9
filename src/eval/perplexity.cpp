#include "eval/perplexity.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/timer.h"

namespace llmopt::eval {
namespace {

// One forward pass over tokens[start, start+len); positions >= first_scored predict the next
// token (targets tokens[start+p+1]). replace_first_with_bos implements llama.cpp's chunking.
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

PerplexityResult evaluate_perplexity(model::LlamaModel& m, const std::vector<int64_t>& tokens,
                                     const PerplexityOptions& o, model::LlamaModel* baseline,
                                     const ProgressFn& progress) {
  torch::NoGradGuard no_grad;
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

  double sum_nll = 0, sum_nll2 = 0, sum_base_nll = 0, sum_dp2 = 0;
  int64_t count = 0, agree = 0;
  std::vector<double> klds;
  const auto dev = m.device();
  int64_t done = 0;
  for (const auto& w : windows) {
    std::vector<int64_t> ids(tokens.begin() + w.start, tokens.begin() + w.start + w.len);
    if (w.bos_first) ids[0] = o.bos_id;
    auto input = torch::tensor(ids, torch::kLong).view({1, -1});
    const int64_t n_pred = w.len - 1 - w.first_scored;  // predictions at positions first..len-2
    auto targets = torch::tensor(std::vector<int64_t>(tokens.begin() + w.start + w.first_scored + 1,
                                                      tokens.begin() + w.start + w.len),
                                 torch::kLong);
    auto logits = m.forward(input.to(dev))[0].narrow(0, w.first_scored, n_pred).to(torch::kCPU);  // [n, V]
    auto logp = torch::log_softmax(logits, -1);
    auto nll = -logp.gather(1, targets.unsqueeze(1)).squeeze(1).to(torch::kFloat64);
    sum_nll += nll.sum().item<double>();
    sum_nll2 += nll.pow(2).sum().item<double>();
    count += n_pred;
    if (baseline) {
      auto blogits = baseline->forward(input.to(baseline->device()))[0].narrow(0, w.first_scored, n_pred).to(torch::kCPU);
      auto blogp = torch::log_softmax(blogits, -1);
      // KL(base || model) per position, in nats, accumulated in float64.
      auto kld = (blogp.exp() * (blogp - logp)).sum(-1).to(torch::kFloat64);
      auto kacc = kld.accessor<double, 1>();
      for (int64_t i = 0; i < n_pred; ++i) klds.push_back(std::max(0.0, kacc[i]));
      agree += (logits.argmax(-1) == blogits.argmax(-1)).sum().item<int64_t>();
      auto bnll = -blogp.gather(1, targets.unsqueeze(1)).squeeze(1).to(torch::kFloat64);
      sum_base_nll += bnll.sum().item<double>();
      auto dp = (-nll).exp() - (-bnll).exp();
      sum_dp2 += dp.pow(2).sum().item<double>();
    }
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

}  // namespace llmopt::eval
