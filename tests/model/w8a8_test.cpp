// W8A8 layer (model/w8a8_linear.h) against the same quantized math written out here in float64
// loops: weight codes round(w / (absmax_row/127)) with the f32 scale, activation codes per token
// (dynamic) or with the fixed step (static, clamped to ±127), integer dot products in int64,
// rescaled; outlier columns (|x| > threshold, or calibrated) computed in float from the kept f16
// weight columns or the dequantized int8 ones. Tolerance: the layer's integer sums are exact, its
// rescale is two float64 products, and its output is rounded to float32 once, so
// |y − ref| ≤ 2^-23 · (|y_int| + Σ|float terms|) + |b|·2^-23 bounds the difference.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>
#include <vector>

#include "core/error.h"
#include "model/calibration.h"
#include "model/smoothquant.h"
#include "model/state_io.h"
#include "model/synth.h"
#include "model/w8a8_linear.h"

namespace llmopt {
namespace {

struct Ref {
  std::vector<double> y, bound;
};

// x [m, in], w [out, in] float32 (row major), kept: calibrated columns (f16 weights), thr ≤ 0 none.
Ref reference(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, const std::set<int64_t>& kept,
              double thr, bool dynamic, double static_step) {
  const int64_t m = x.size(0), in = x.size(1), out = w.size(0);
  auto xa = x.accessor<float, 2>();
  auto wa = w.accessor<float, 2>();
  std::vector<float> ws(out);
  std::vector<int64_t> wq(out * in);
  for (int64_t o = 0; o < out; ++o) {
    float amax = 0;
    for (int64_t j = 0; j < in; ++j) amax = std::max(amax, std::fabs(wa[o][j]));
    ws[o] = amax > 0 ? amax / 127.0f : 1.0f;
    for (int64_t j = 0; j < in; ++j) wq[o * in + j] = std::llround(std::nearbyint(wa[o][j] / ws[o]));
  }
  std::vector<char> flt(in, 0), runtime(in, 0);
  for (int64_t j : kept) flt[j] = 1;
  if (dynamic && thr > 0)
    for (int64_t j = 0; j < in; ++j)
      for (int64_t r = 0; r < m; ++r)
        if (!flt[j] && std::fabs(static_cast<double>(xa[r][j])) > thr) runtime[j] = 1;
  Ref ref;
  for (int64_t r = 0; r < m; ++r) {
    double step = static_step;
    if (dynamic) {
      double amax = 0;
      for (int64_t j = 0; j < in; ++j)
        if (!flt[j] && !runtime[j]) amax = std::max(amax, std::fabs(static_cast<double>(xa[r][j])));
      step = amax > 0 ? amax / 127.0 : 1.0;
    }
    std::vector<int64_t> xq(in, 0);
    for (int64_t j = 0; j < in; ++j)
      if (!flt[j] && !runtime[j])
        xq[j] = std::clamp<int64_t>(std::llround(std::nearbyint(xa[r][j] / step)), -127, 127);
    for (int64_t o = 0; o < out; ++o) {
      int64_t acc = 0;
      for (int64_t j = 0; j < in; ++j) acc += xq[j] * wq[o * in + j];
      double y = static_cast<double>(acc) * step * static_cast<double>(ws[o]);
      double mag = std::fabs(y);
      for (int64_t j = 0; j < in; ++j) {
        double t = 0;
        if (flt[j]) t = static_cast<double>(xa[r][j]) * static_cast<double>(static_cast<float>(c10::Half(wa[o][j])));
        if (runtime[j]) t = static_cast<double>(xa[r][j]) * static_cast<double>(wq[o * in + j]) * ws[o];
        y += t;
        mag += std::fabs(t);
      }
      if (b.defined()) y += b[o].item<double>(), mag += std::fabs(b[o].item<double>());
      ref.y.push_back(y);
      ref.bound.push_back(std::ldexp(mag, -23) + 1e-30);
    }
  }
  return ref;
}

void expect_close(const torch::Tensor& y, const Ref& ref) {
  auto yc = y.contiguous();
  ASSERT_EQ(yc.numel(), static_cast<int64_t>(ref.y.size()));
  const float* p = yc.data_ptr<float>();
  for (size_t i = 0; i < ref.y.size(); ++i)
    ASSERT_LE(std::fabs(p[i] - ref.y[i]), ref.bound[i]) << "element " << i << ": " << p[i] << " vs " << ref.y[i];
}

TEST(W8A8, DynamicPerTokenEqualsIntegerMath) {
  torch::manual_seed(1);
  auto w = torch::randn({24, 80});
  auto b = torch::randn({24});
  auto x = torch::randn({7, 80}) * 2.0;
  x[3].mul_(0.01);  // per-token scales differ by rows
  model::W8A8Params p;
  p.threshold = 0;  // no decomposition
  auto l = model::W8A8Linear::quantize(w, b, p);
  expect_close(l->forward(x), reference(x, w, b, {}, 0, true, 0));
  // Codes are the weight rounded with its own per-row absmax (quantizer checked on its own).
  auto codes = l->qweight().to(torch::kInt64);
  EXPECT_EQ(codes.abs().amax(1).min().item<int64_t>(), 127);
}

TEST(W8A8, OutlierColumnsComputedInFloat) {
  torch::manual_seed(2);
  auto w = torch::randn({16, 64});
  auto x = torch::randn({5, 64});
  x.select(1, 5).mul_(30.0);   // run-time outliers (|x| > 6 in some row)
  x.select(1, 40).fill_(-9.0);
  x[2][11] = 7.5f;             // one value is enough to take the column out
  model::W8A8Params p;          // threshold 6
  auto l = model::W8A8Linear::quantize(w, {}, p);
  expect_close(l->forward(x), reference(x, w, {}, {}, 6.0, true, 0));
  // Calibrated columns keep their f16 weights (and the rest still splits at run time).
  auto kept = torch::tensor({40, 3}, torch::kInt64);
  auto l2 = model::W8A8Linear::quantize(w, {}, p, kept);
  expect_close(l2->forward(x), reference(x, w, {}, {3, 40}, 6.0, true, 0));
  // Without decomposition the outliers flatten the other columns' grid: a larger error than with it.
  model::W8A8Params none;
  none.threshold = 0;
  auto l3 = model::W8A8Linear::quantize(w, {}, none);
  auto exact = torch::matmul(x.to(torch::kFloat64), w.to(torch::kFloat64).t());
  const double e_dec = (l->forward(x).to(torch::kFloat64) - exact).pow(2).sum().item<double>();
  const double e_none = (l3->forward(x).to(torch::kFloat64) - exact).pow(2).sum().item<double>();
  EXPECT_LT(e_dec, e_none);
}

TEST(W8A8, StaticScaleClamps) {
  torch::manual_seed(3);
  auto w = torch::randn({12, 48});
  auto x = torch::randn({6, 48});
  x[1][2] = 40.0f;  // beyond 127 · step: clamped
  model::W8A8Params p;
  p.mode = "static";
  const double step = 3.0 / 127.0;
  auto l = model::W8A8Linear::quantize(w, {}, p, {}, step);
  const float stepf = static_cast<float>(step);  // stored as f32
  expect_close(l->forward(x), reference(x, w, {}, {}, 6.0, false, static_cast<double>(stepf)));
  EXPECT_THROW(model::W8A8Linear::quantize(w, {}, p, {}, 0.0), InputError);
}

TEST(W8A8, StateRoundTrip) {
  torch::manual_seed(4);
  ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 70;
  auto m = model::synth_model(c, 5);
  std::shared_ptr<model::LinearLayer> q, up;
  for (auto& [n, l] : m->linear_layers()) {
    if (n == "model.layers.0.self_attn.q_proj") q = l;
    if (n == "model.layers.1.mlp.up_proj") up = l;
  }
  model::W8A8Params dyn;
  model::W8A8Params st;
  st.mode = "static";
  auto lq = model::W8A8Linear::quantize(q->dense_weight(), {}, dyn, torch::tensor({1, 9}, torch::kInt64));
  auto lu = model::W8A8Linear::quantize(up->dense_weight(), torch::randn({96}), st, {}, 0.02);
  m->set_linear("model.layers.0.self_attn.q_proj", lq);
  m->set_linear("model.layers.1.mlp.up_proj", lu);
  // Factory: the same function from the stored bytes.
  auto x = torch::randn({4, 64}) * 4;
  for (auto& l : {std::static_pointer_cast<model::LinearLayer>(lq), std::static_pointer_cast<model::LinearLayer>(lu)}) {
    auto r = model::make_linear(l->stored_state(), "test");
    EXPECT_EQ(r->kind(), "w8a8");
    EXPECT_TRUE(torch::equal(r->forward(x), l->forward(x)));
  }
  const auto dir = std::filesystem::temp_directory_path() / ("llmopt-w8a8-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  model::save_model_state(*m, dir.string());
  auto m2 = model::load_model_state(dir.string());
  std::filesystem::remove_all(dir);
  for (auto& [n, l] : m2->linear_layers()) {
    if (n != "model.layers.0.self_attn.q_proj" && n != "model.layers.1.mlp.up_proj") continue;
    auto orig = n == "model.layers.0.self_attn.q_proj" ? std::static_pointer_cast<model::LinearLayer>(lq)
                                                       : std::static_pointer_cast<model::LinearLayer>(lu);
    ASSERT_EQ(l->kind(), "w8a8");
    EXPECT_TRUE(torch::equal(l->forward(x), orig->forward(x))) << n;
  }
  // Bad state: missing scales.
  auto bad = lq->stored_state();
  bad.tensors.erase(bad.tensors.begin() + 1);
  EXPECT_THROW(model::make_linear(bad, "bad"), InputError);
}

ModelConfig smooth_config() {
  ModelConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 4;  // o_proj reads v's heads directly: the v -> o group is smoothed too
  c.head_dim = 8;
  c.vocab_size = 60;
  return c;
}

// SmoothQuant leaves the float model's function unchanged and its scales follow
// s_j = max|X_j|^a / max|W_j|^(1-a), computed here in float64 from the pre-smoothing weights.
TEST(SmoothQuant, FoldedScalesKeepTheFunction) {
  torch::NoGradGuard ng;
  torch::manual_seed(6);
  auto m = model::synth_model(smooth_config(), 7);
  auto tokens = torch::randint(0, 60, {2, 12}, torch::kInt64);
  const auto before = m->forward(tokens);
  auto get = [&](const std::string& p) {
    for (auto& [n, l] : m->linear_layers())
      if (n == p) return l->dense_weight().to(torch::kFloat64).clone();
    return torch::Tensor();
  };
  model::CalibrateOptions co;
  co.batch = 2;
  torch::Tensor s_ref, q_old, q_new;
  int groups = 0;
  model::calibrate_layerwise(*m, tokens, co, [&](model::LayerCalibration& lc) {
    if (lc.layer == 0) {
      q_old = get("model.layers.0.self_attn.q_proj");
      auto wmax = torch::maximum(torch::maximum(q_old.abs().amax(0), get("model.layers.0.self_attn.k_proj").abs().amax(0)),
                                 get("model.layers.0.self_attn.v_proj").abs().amax(0));
      auto xmax = lc.stats.at("model.layers.0.self_attn.q_proj")->abs_max.to(torch::kFloat64);
      s_ref = xmax.pow(0.7) / wmax.pow(0.3);
    }
    groups += static_cast<int>(model::smooth_layer(*m, lc, 0.7, [](const std::string&) { return false; }).size());
    if (lc.layer == 0) q_new = get("model.layers.0.self_attn.q_proj");
  });
  EXPECT_EQ(groups, 8);  // attn_norm, v_proj, ffn_norm, up_proj in each of 2 layers
  // Float32 weights scaled once: ratios within a few ulp (2^-21 relative).
  auto ratio = q_new / q_old;
  auto mask = q_old.abs() > 1e-6;
  auto rel = ((ratio - s_ref.unsqueeze(0)).abs() / s_ref.unsqueeze(0)).masked_select(mask);
  EXPECT_LT(rel.max().item<double>(), std::ldexp(1.0, -19));
  // The model computes the same logits up to float32 reassociation of scaled products: a relative
  // 2^-16 of the logits' range covers a few hundred ulp of accumulated rounding over two layers.
  const auto after = m->forward(tokens);
  const double tol = std::ldexp(before.abs().max().item<double>(), -16);
  EXPECT_LT((after - before).abs().max().item<double>(), tol);
  EXPECT_THROW(model::smooth_layer(*m, model::LayerCalibration{}, 1.5, [](const std::string&) { return false; }),
               InputError);
}

TEST(SmoothQuant, StaticActivationRanges) {
  torch::manual_seed(8);
  auto x = torch::randn({400, 10});
  x[17][3] = 50.0f;  // one outlier value in column 3
  x.select(1, 9).mul_(100.0);  // column 9 excluded (kept in float)
  model::InputStats st;
  st.add(x, /*hessian=*/false, /*sample_stride=*/1);
  auto excl = torch::zeros({10}, torch::kBool);
  excl[9] = true;
  auto xa = x.index({torch::indexing::Slice(), torch::indexing::Slice(0, 9)}).abs().flatten();
  std::vector<float> v(xa.data_ptr<float>(), xa.data_ptr<float>() + xa.numel());
  EXPECT_DOUBLE_EQ(model::activation_clip(st, "minmax", excl), 50.0);
  // percentile p: the ceil(p/100 · n)-th smallest |x| (nearest rank).
  std::sort(v.begin(), v.end());
  const size_t k = static_cast<size_t>(std::ceil(0.99 * v.size())) - 1;
  EXPECT_DOUBLE_EQ(model::activation_clip(st, "percentile", excl, 99.0), v[k]);
  // mse: its squared int8 error on the rows is no larger than min-max's or a half clip's.
  auto err = [&](double c) {
    double e = 0, step = c / 127.0;
    for (float a : v) {
      double q = std::min(127.0, std::nearbyint(a / step)) * step;
      e += (a - q) * (a - q);
    }
    return e;
  };
  const double c_mse = model::activation_clip(st, "mse", excl);
  EXPECT_GT(c_mse, 0.0);
  EXPECT_LE(c_mse, 50.0);
  EXPECT_LE(err(c_mse), err(50.0) * (1 + 1e-9));
  EXPECT_LE(err(c_mse), err(25.0) * (1 + 1e-9));
  EXPECT_THROW(model::activation_clip(st, "kl", excl), InputError);
}

}  // namespace
}  // namespace llmopt
