// The inference interface (infer::Engine: native CpuLlama and model::TorchEngine) and the
// perplexity protocols against a direct float64 computation written here: a plain-loop Llama
// forward over exactly the tokens each protocol says a prediction sees, its log-softmax, NLL and
// KL divergence in float64. Nothing is shared with src/infer, src/model or src/eval beyond the
// tensor names.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <random>

#include "core/error.h"
#include "eval/perplexity.h"
#include "infer/llama_cpu.h"
#include "model/loader.h"
#include "model/synth.h"
#include "model/torch_engine.h"

namespace llmopt {
namespace {

ModelConfig small_config(int64_t sliding_window = 0) {
  ModelConfig c;
  c.hidden_size = 48;
  c.intermediate_size = 100;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 6;
  c.num_key_value_heads = 2;  // GQA
  c.head_dim = 8;
  c.vocab_size = 97;
  c.rope_theta = 10000;
  c.max_position_embeddings = 64;
  c.sliding_window = sliding_window;
  return c;
}

// A synthetic model with weights scaled up from synth's N(0, 0.02) so that attention and the
// next-token distributions are far from uniform (logits of a few units; on random text its NLL
// is ~5.5 nats, against log 97 = 4.6 for a uniform prediction).
std::shared_ptr<model::LlamaModel> make_model(uint64_t seed, double scale = 3, int64_t window = 0) {
  auto m = model::synth_model(small_config(window), seed);
  torch::NoGradGuard ng;
  for (auto& p : m->parameters()) p.mul_(scale);
  return m;
}

// Float64 Llama forward (HF definitions: RMSNorm, rotate-half RoPE, GQA, SwiGLU; with a sliding
// window W the query at t sees keys t-W+1..t, HF's Mistral mask).
class Reference {
 public:
  explicit Reference(model::LlamaModel& m) : c_(m.config()) {
    const io::Checkpoint ck = model::model_to_checkpoint(m);
    for (const auto& t : ck.tensors) {
      const float* f = reinterpret_cast<const float*>(t.data);
      w_[t.name] = std::vector<double>(f, f + t.numel());
    }
  }

  // Logits [T][V] of every position of `ids` (positions 0..T-1).
  std::vector<std::vector<double>> forward(const std::vector<int64_t>& ids) const {
    const int64_t T = static_cast<int64_t>(ids.size()), D = c_.hidden_size, H = c_.num_attention_heads;
    const int64_t KV = c_.num_key_value_heads, hd = c_.head_dim, F = c_.intermediate_size, V = c_.vocab_size;
    using Mat = std::vector<std::vector<double>>;
    Mat x(T, std::vector<double>(D));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < D; ++i) x[t][i] = at("model.embed_tokens.weight")[ids[t] * D + i];
    auto rms = [&](const Mat& in, const std::string& w) {
      Mat out = in;
      for (auto& row : out) {
        double ss = 0;
        for (double v : row) ss += v * v;
        const double r = 1.0 / std::sqrt(ss / static_cast<double>(row.size()) + c_.rms_norm_eps);
        for (size_t i = 0; i < row.size(); ++i) row[i] *= r * at(w)[i];
      }
      return out;
    };
    auto lin = [&](const Mat& in, const std::string& name, int64_t n_out) {
      const auto& W = at(name + ".weight");
      const int64_t k = static_cast<int64_t>(in[0].size());
      Mat out(in.size(), std::vector<double>(n_out));
      for (size_t t = 0; t < in.size(); ++t)
        for (int64_t o = 0; o < n_out; ++o) {
          double s = w_.count(name + ".bias") ? at(name + ".bias")[o] : 0.0;
          for (int64_t i = 0; i < k; ++i) s += W[o * k + i] * in[t][i];
          out[t][o] = s;
        }
      return out;
    };
    auto rope = [&](std::vector<double>& row, int64_t head, int64_t pos) {
      double* v = row.data() + head * hd;
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double th = static_cast<double>(pos) * std::pow(c_.rope_theta, -2.0 * i / hd);
        const double a = v[i], b = v[i + hd / 2];
        v[i] = a * std::cos(th) - b * std::sin(th);
        v[i + hd / 2] = b * std::cos(th) + a * std::sin(th);
      }
    };
    for (int64_t l = 0; l < c_.num_hidden_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l);
      Mat h = rms(x, p + ".input_layernorm.weight");
      Mat q = lin(h, p + ".self_attn.q_proj", H * hd), k = lin(h, p + ".self_attn.k_proj", KV * hd);
      Mat v = lin(h, p + ".self_attn.v_proj", KV * hd);
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t hh = 0; hh < H; ++hh) rope(q[t], hh, t);
        for (int64_t hh = 0; hh < KV; ++hh) rope(k[t], hh, t);
      }
      Mat att(T, std::vector<double>(H * hd, 0.0));
      for (int64_t hh = 0; hh < H; ++hh) {
        const int64_t g = hh / (H / KV);
        for (int64_t t = 0; t < T; ++t) {
          std::vector<double> s(t + 1, -INFINITY);
          const int64_t lo = c_.sliding_window > 0 ? std::max<int64_t>(0, t - c_.sliding_window + 1) : 0;
          double mx = -INFINITY, sum = 0;
          for (int64_t j = lo; j <= t; ++j) {
            double d = 0;
            for (int64_t i = 0; i < hd; ++i) d += q[t][hh * hd + i] * k[j][g * hd + i];
            s[j] = d / std::sqrt(static_cast<double>(hd));
            mx = std::max(mx, s[j]);
          }
          for (double& e : s) sum += (e = std::exp(e - mx));  // exp(-inf) = 0 for hidden keys
          for (int64_t j = lo; j <= t; ++j)
            for (int64_t i = 0; i < hd; ++i) att[t][hh * hd + i] += s[j] / sum * v[j][g * hd + i];
        }
      }
      Mat o = lin(att, p + ".self_attn.o_proj", D);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < D; ++i) x[t][i] += o[t][i];
      h = rms(x, p + ".post_attention_layernorm.weight");
      Mat gt = lin(h, p + ".mlp.gate_proj", F), up = lin(h, p + ".mlp.up_proj", F);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < F; ++i) gt[t][i] = gt[t][i] / (1 + std::exp(-gt[t][i])) * up[t][i];
      Mat dn = lin(gt, p + ".mlp.down_proj", D);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < D; ++i) x[t][i] += dn[t][i];
    }
    Mat h = rms(x, "model.norm.weight");
    return lin(h, w_.count("lm_head.weight") ? "lm_head" : "model.embed_tokens", V);
  }

  // Log-probabilities of the token after `context` (its last position's log-softmax).
  std::vector<double> next_log_probs(const std::vector<int64_t>& context) const {
    std::vector<double> l = forward(context).back();
    const double mx = *std::max_element(l.begin(), l.end());
    double s = 0;
    for (double v : l) s += std::exp(v - mx);
    const double lse = mx + std::log(s);
    for (double& v : l) v -= lse;
    return l;
  }

 private:
  const std::vector<double>& at(const std::string& n) const { return w_.at(n); }
  ModelConfig c_;
  std::map<std::string, std::vector<double>> w_;
};

// fp32 engines vs the float64 forward: logits agree within this (absolute, for |logits| of a
// few units): fp32's 6e-8 relative precision over reductions of ≤ 100 terms through 2 layers,
// amplified by the norms and the softmax, stays below 1e-5 per unit of logit scale (the same
// bound tests/model/llama_test.cpp establishes for these shapes).
constexpr double kLogitTol = 1e-5;

double logit_tol(const std::vector<std::vector<double>>& ref) {
  double mx = 1;
  for (const auto& r : ref)
    for (double v : r) mx = std::max(mx, std::fabs(v));
  return kLogitTol * mx;
}

std::vector<int64_t> random_tokens(int64_t n, uint64_t seed, int64_t vocab) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> d(0, vocab - 1);
  std::vector<int64_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

struct Engines {
  std::shared_ptr<model::LlamaModel> m;
  std::unique_ptr<infer::CpuLlama> native;
  std::unique_ptr<model::TorchEngine> torch;
  explicit Engines(std::shared_ptr<model::LlamaModel> model)
      : m(std::move(model)),
        native(std::make_unique<infer::CpuLlama>(model::model_to_checkpoint(*m))),
        torch(std::make_unique<model::TorchEngine>(m)) {}
  std::vector<const infer::Engine*> both() const { return {native.get(), torch.get()}; }
};

// prefill(all_positions) writes every position's logits; from an empty cache, continued from a
// filled one, and for one token (which goes through decode); the last-position form agrees.
TEST(Engine, AllPositionLogitsMatchFloat64Reference) {
  Engines e(make_model(21));
  Reference ref(*e.m);
  const std::vector<int64_t> ids = random_tokens(11, 5, 97);
  const auto want = ref.forward(ids);
  const double tol = logit_tol(want);
  const int64_t V = 97, T = static_cast<int64_t>(ids.size());
  for (const infer::Engine* eng : e.both()) {
    SCOPED_TRACE(eng->name());
    std::vector<float> logits(T * V), last(V);
    auto cache = eng->make_cache(T);
    auto check_rows = [&](int64_t first, int64_t n) {
      for (int64_t r = 0; r < n; ++r)
        for (int64_t j = 0; j < V; ++j) ASSERT_NEAR(logits[r * V + j], want[first + r][j], tol) << "row " << first + r;
    };
    eng->prefill(ids.data(), T, *cache, logits.data(), true);
    EXPECT_EQ(cache->length(), T);
    check_rows(0, T);
    cache->truncate(4);  // positions 4.. again: 1 token through decode, then 6 more at once
    eng->prefill(ids.data() + 4, 1, *cache, logits.data(), true);
    check_rows(4, 1);
    eng->prefill(ids.data() + 5, 6, *cache, logits.data(), true);
    check_rows(5, 6);
    cache->reset();
    eng->prefill(ids.data(), T, *cache, last.data(), false);
    for (int64_t j = 0; j < V; ++j) EXPECT_NEAR(last[j], want[T - 1][j], tol);
    EXPECT_THROW(eng->prefill(ids.data(), 1, *cache, logits.data(), true), InputError);  // full
    EXPECT_EQ(cache->length(), T);
    EXPECT_EQ(eng->make_cache(3)->capacity(), 3);
  }
}

// Mistral's sliding-window attention in both engines: every position's logits from one prefill,
// a prefill continued past the window, and token-by-token decode (the fused step) all see only
// the last W keys.
TEST(Engine, SlidingWindowAttentionMatchesFloat64Reference) {
  Engines e(make_model(23, 3, /*window=*/4));
  Reference ref(*e.m);
  const std::vector<int64_t> ids = random_tokens(13, 17, 97);
  const auto want = ref.forward(ids);
  const double tol = logit_tol(want);
  const int64_t V = 97, T = static_cast<int64_t>(ids.size());
  {  // the window matters: the reference without it differs
    auto m0 = make_model(23, 3, 0);
    const auto full = Reference(*m0).forward(ids);
    double d = 0;
    for (int64_t j = 0; j < V; ++j) d = std::max(d, std::fabs(full[T - 1][j] - want[T - 1][j]));
    EXPECT_GT(d, 100 * tol);
  }
  for (const infer::Engine* eng : e.both()) {
    SCOPED_TRACE(eng->name());
    std::vector<float> logits(T * V);
    auto cache = eng->make_cache(T);
    eng->prefill(ids.data(), T, *cache, logits.data(), true);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < V; ++j) ASSERT_NEAR(logits[t * V + j], want[t][j], tol) << "prefill row " << t;
    cache->truncate(6);
    eng->prefill(ids.data() + 6, 5, *cache, logits.data(), true);
    for (int64_t t = 6; t < 11; ++t)
      for (int64_t j = 0; j < V; ++j) ASSERT_NEAR(logits[(t - 6) * V + j], want[t][j], tol) << "continued row " << t;
    cache->reset();
    for (int64_t t = 0; t < T; ++t) {
      eng->decode(ids[t], *cache, logits.data());
      for (int64_t j = 0; j < V; ++j) ASSERT_NEAR(logits[j], want[t][j], tol) << "decode at " << t;
    }
  }
}

// For each protocol, the scored targets and the exact context each one is predicted from, as the
// protocol defines them (written independently of src/eval's window builder).
struct Scored {
  int64_t target_index;          // index in the text of the token predicted
  std::vector<int64_t> context;  // the tokens the prediction sees
};

// sliding: windows [s, s+ctx) at s = 0, stride, 2·stride, ... (clipped to the text, up to the
// first window reaching its end); token i (i ≥ 1) is scored once, in the first window in which it
// is a target (s + 1 ≤ i < s + ctx), i.e. with the longest context the window grid offers:
// tokens[s, i) for the smallest such s.
std::vector<Scored> sliding_direct(const std::vector<int64_t>& tok, int64_t ctx, int64_t stride) {
  const int64_t n = static_cast<int64_t>(tok.size());
  std::vector<Scored> out;
  for (int64_t i = 1; i < n; ++i) {
    for (int64_t s = 0; s < i; s += stride) {
      if (i < s + ctx) {
        out.push_back({i, std::vector<int64_t>(tok.begin() + s, tok.begin() + i)});
        break;
      }
    }
  }
  return out;
}

// llamacpp: chunk c = tokens[c·ctx, (c+1)·ctx) for c < n / ctx, its first token replaced by BOS
// when bos ≥ 0; positions ctx/2 .. ctx-2 predict the next token of the chunk.
std::vector<Scored> llamacpp_direct(const std::vector<int64_t>& tok, int64_t ctx, int64_t bos) {
  std::vector<Scored> out;
  for (int64_t c = 0; c < static_cast<int64_t>(tok.size()) / ctx; ++c) {
    std::vector<int64_t> chunk(tok.begin() + c * ctx, tok.begin() + (c + 1) * ctx);
    if (bos >= 0) chunk[0] = bos;
    for (int64_t p = ctx / 2; p <= ctx - 2; ++p)
      out.push_back({c * ctx + p + 1, std::vector<int64_t>(chunk.begin(), chunk.begin() + p + 1)});
  }
  return out;
}

double direct_nll_mean(const Reference& ref, const std::vector<int64_t>& tok, const std::vector<Scored>& sc,
                       double* tol) {
  double sum = 0, worst_tol = 0;
  for (const Scored& s : sc) {
    const auto logits = ref.forward(s.context);
    worst_tol = std::max(worst_tol, logit_tol({logits.back()}));
    std::vector<double> lp = ref.next_log_probs(s.context);
    sum += -lp[tok[s.target_index]];
  }
  // NLL = logsumexp(l) - l_target: each term moves by at most the logits' error, so by 2·tol.
  *tol = 2 * worst_tol;
  return sum / static_cast<double>(sc.size());
}

TEST(Perplexity, SlidingMatchesDirectComputation) {
  Engines e(make_model(31));
  Reference ref(*e.m);
  const std::vector<int64_t> tok = random_tokens(37, 7, 97);
  struct Case {
    int64_t ctx, stride;
  };
  for (const Case k : {Case{12, 5}, Case{10, 10}, Case{9, 1}, Case{16, 0}}) {
    const int64_t stride = k.stride > 0 ? k.stride : k.ctx / 2;  // 0 = ctx/2
    SCOPED_TRACE("ctx " + std::to_string(k.ctx) + " stride " + std::to_string(stride));
    const auto sc = sliding_direct(tok, k.ctx, stride);
    double tol = 0;
    const double want = direct_nll_mean(ref, tok, sc, &tol);
    eval::PerplexityOptions o;
    o.protocol = eval::PerplexityProtocol::Sliding;
    o.ctx = k.ctx;
    o.stride = k.stride;
    for (const infer::Engine* eng : e.both()) {
      const auto r = eval::evaluate_perplexity(*eng, tok, o);
      EXPECT_EQ(r.tokens, static_cast<int64_t>(sc.size())) << eng->name();
      EXPECT_NEAR(r.nll_mean, want, tol) << eng->name();
      EXPECT_NEAR(r.perplexity, std::exp(want), std::exp(want) * 2 * tol) << eng->name();
    }
  }
}

// llamacpp chunks with and without BOS replacement (llama-perplexity replaces the first token of
// each chunk only when the vocabulary adds BOS).
TEST(Perplexity, LlamaCppChunksMatchDirectComputationWithAndWithoutBos) {
  Engines e(make_model(41));
  Reference ref(*e.m);
  const std::vector<int64_t> tok = random_tokens(50, 9, 97);
  for (int64_t bos : {int64_t{-1}, int64_t{1}}) {
    SCOPED_TRACE("bos " + std::to_string(bos));
    const auto sc = llamacpp_direct(tok, 16, bos);
    double tol = 0;
    const double want = direct_nll_mean(ref, tok, sc, &tol);
    eval::PerplexityOptions o;
    o.ctx = 16;
    o.bos_id = bos;
    for (const infer::Engine* eng : e.both()) {
      const auto r = eval::evaluate_perplexity(*eng, tok, o);
      EXPECT_EQ(r.chunks, 3);
      EXPECT_EQ(r.tokens, 3 * 7);
      EXPECT_NEAR(r.nll_mean, want, tol) << eng->name();
    }
  }
}

// KL(base || model), top-1 agreement, delta_p_rms and the baseline's perplexity against the
// direct float64 computation, for a model and a perturbed copy of it (both engines).
TEST(Perplexity, KldAgainstPerturbedModelMatchesDirectComputation) {
  auto base_model = make_model(51);
  auto model = make_model(51);
  {
    torch::NoGradGuard ng;
    torch::manual_seed(3);
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.05 * p.abs().mean());
  }
  Engines base(base_model), pert(model);
  Reference rb(*base_model), rm(*model);
  const std::vector<int64_t> tok = random_tokens(40, 11, 97);
  eval::PerplexityOptions o;
  o.protocol = eval::PerplexityProtocol::Windows;
  o.ctx = 10;
  // Direct: windows [0,10), [10,20), ...; every position but the last predicts the next token.
  double kld = 0, dp2 = 0, bnll = 0, tol_kld = 0;
  int64_t n = 0, agree = 0, near_ties = 0;
  double tol = 0;
  for (int64_t s = 0; s < 40; s += 10) {
    const std::vector<int64_t> w(tok.begin() + s, tok.begin() + s + 10);
    const auto lb = rb.forward(w), lm = rm.forward(w);
    tol = std::max({tol, logit_tol(lb), logit_tol(lm)});
    for (int64_t p = 0; p + 1 < 10; ++p) {
      auto lsm = [](std::vector<double> l) {
        const double mx = *std::max_element(l.begin(), l.end());
        double z = 0;
        for (double v : l) z += std::exp(v - mx);
        for (double& v : l) v -= mx + std::log(z);
        return l;
      };
      const auto pb = lsm(lb[p]), pm = lsm(lm[p]);
      double k = 0, spread = 0;
      for (size_t j = 0; j < pb.size(); ++j) {
        k += std::exp(pb[j]) * (pb[j] - pm[j]);
        spread += std::exp(pb[j]) * std::fabs(pb[j] - pm[j]);
      }
      kld += k;
      tol_kld = std::max(tol_kld, spread);
      const int64_t target = w[p + 1];
      bnll += -pb[target];
      const double dp = std::exp(pm[target]) - std::exp(pb[target]);
      dp2 += dp * dp;
      auto top2_margin = [](const std::vector<double>& l, int64_t* arg) {
        std::vector<double> c = l;
        *arg = std::max_element(c.begin(), c.end()) - c.begin();
        std::nth_element(c.begin(), c.begin() + 1, c.end(), std::greater<>());
        return c[0] - c[1];
      };
      int64_t ab = 0, am = 0;
      const double mb = top2_margin(lb[p], &ab), mm = top2_margin(lm[p], &am);
      agree += ab == am;
      if (mb < 2 * tol || mm < 2 * tol) ++near_ties;  // argmax not decided at fp32 precision
      ++n;
    }
  }
  const double dn = static_cast<double>(n);
  // Each log-probability is within 2·tol of the reference's, so KL's terms p_b·(lp_b − lp_m) move
  // by ≤ p_b·4·tol plus (relative change of p_b ≤ 2·tol)·p_b·|lp_b − lp_m|: per position
  // ≤ 4·tol + 2·tol·Σ p_b|lp_b − lp_m|.
  const double kld_tol = 4 * tol + 2 * tol * tol_kld;
  for (int which = 0; which < 2; ++which) {
    const infer::Engine& em = which == 0 ? static_cast<const infer::Engine&>(*pert.native) : *pert.torch;
    const infer::Engine& eb = which == 0 ? static_cast<const infer::Engine&>(*base.native) : *base.torch;
    SCOPED_TRACE(em.name());
    const auto r = eval::evaluate_perplexity(em, tok, o, &eb);
    ASSERT_TRUE(r.has_baseline);
    EXPECT_EQ(r.tokens, n);
    EXPECT_GT(kld / dn, 1e-4);  // the perturbation is visible: the comparison below means something
    EXPECT_NEAR(r.kld_mean, kld / dn, kld_tol);
    EXPECT_NEAR(r.top1_agreement, static_cast<double>(agree) / dn, static_cast<double>(near_ties) / dn);
    // p = exp(−NLL) moves by ≤ 2·tol·p ≤ 2·tol for each model: the difference by ≤ 4·tol.
    EXPECT_NEAR(r.delta_p_rms, std::sqrt(dp2 / dn), 4 * tol);
    EXPECT_NEAR(std::log(r.baseline_perplexity), bnll / dn, 2 * tol);
  }
}

}  // namespace
}  // namespace llmopt
