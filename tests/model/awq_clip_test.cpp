// AWQ auto-clip (model/awq.h) against direct float64 math:
//  - weight outliers planted on weak input channels: the clip search lowers the rounded weight's
//    output error ‖X(Q − W)ᵀ‖²/n (computed here from X in float64) well below plain rounding's;
//    the errors the search reports equal the ones computed here; the stored weight is W clamped
//    to ±r·max|w| per group with r on the grid {1, 0.95, …, 0.55};
//  - on heavy-tailed weights and correlated inputs, over q4_0, q4_k, q6_k and int4 with a tail
//    group, no row's output error rises above the unclipped row's (r = 1 is on the grid and rows
//    whose group choices add up worse are left unclipped);
//  - round_to_grid (the rounding the search uses) equals what gptq_quantize(propagate = false)
//    stores, bit for bit;
//  - on a synth model with outliers planted in layer 0's v_proj on weak norm channels, the clip
//    lowers that layer's output error on the calibration inputs (recomputed here from the
//    embeddings in float64), and `quantize_model` reports the clip for v/o/gate/up/down only,
//    under method awq only.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "kernels/quant_formats.h"
#include "model/awq.h"
#include "model/calibration.h"
#include "model/gptq.h"
#include "model/quantize.h"
#include "model/synth.h"
#include "../common/byte_tokenizer.h"
#include "tokenizer/vocab.h"

namespace llmopt {
namespace {
namespace fs = std::filesystem;

// ggml's reference quantizer (checked against the gguf package elsewhere), row by row.
torch::Tensor round_ggml(const torch::Tensor& w, DType t) {
  auto src = w.to(torch::kFloat32).contiguous();
  auto out = torch::empty_like(src);
  const int64_t in = src.size(1);
  std::vector<uint8_t> row(static_cast<size_t>(dtype_bytes_for(t, in)));
  for (int64_t r = 0; r < src.size(0); ++r) {
    kernels::quantize_row_ref(t, src[r].data_ptr<float>(), row.data(), in);
    kernels::dequantize_row(t, row.data(), out[r].data_ptr<float>(), in);
  }
  return out;
}

// A symmetric 4-bit grid written here: per group of 32 (tail shorter), step = max|w|/7.
torch::Tensor round_int4_sym(const torch::Tensor& w) {
  auto out = torch::empty_like(w);
  for (int64_t g0 = 0; g0 < w.size(1); g0 += 32) {
    const int64_t n = std::min<int64_t>(32, w.size(1) - g0);
    auto blk = w.narrow(1, g0, n);
    auto step = (blk.abs().amax(1, true) / 7).clamp_min(1e-30);
    out.narrow(1, g0, n).copy_((blk / step).round().clamp(-8, 7) * step);
  }
  return out;
}

// ‖X (Q − W)ᵀ‖² / n per output row, float64.
torch::Tensor row_mse(const torch::Tensor& X, const torch::Tensor& Q, const torch::Tensor& W) {
  auto D = (Q.to(torch::kFloat64) - W.to(torch::kFloat64));
  return torch::matmul(X.to(torch::kFloat64), D.t()).pow(2).sum(0) / static_cast<double>(X.size(0));
}

torch::Tensor second_moment(const torch::Tensor& X) {
  auto Xd = X.to(torch::kFloat64);
  return torch::matmul(Xd.t(), Xd) / static_cast<double>(X.size(0));
}

// The summed errors come from two float64 evaluation orders: relative agreement far below 1e-9.
constexpr double kSameSum = 1e-9;

TEST(AwqClip, PlantedOutliersOnWeakChannelsAreClipped) {
  torch::manual_seed(11);
  for (int64_t in : {96, 80}) {  // 80: a tail group of 16
    const int64_t out = 64, n = 1024;
    auto X = torch::randn({n, in});
    std::vector<int64_t> weak;
    for (int64_t c = 3; c < in; c += 8) weak.push_back(c);
    for (int64_t c : weak) X.select(1, c).mul_(0.05);  // inputs that hardly reach the output
    auto W = torch::randn({out, in});
    for (int64_t r = 0; r < out; ++r)
      for (int64_t c : weak) W.index_put_({r, c}, (r + c) % 2 ? 6.0f : -6.0f);
    const auto M = second_moment(X);
    const auto res = model::awq_search_clip(W, M, 32, round_int4_sym, {});
    const auto e0 = row_mse(X, round_int4_sym(W), W), e1 = row_mse(X, round_int4_sym(res.weight), W);
    // Unclipped, the step is 6/7 and the ~28 strong weights of a group each add step²/12; clipped
    // at 0.55 the step and that error shrink by 0.55 (0.30×) for a clipped outlier's cost of
    // (2.7)²·0.05² ≈ 0.018: the clipped error is about a third, so well below half.
    EXPECT_LT(e1.sum().item<double>(), 0.5 * e0.sum().item<double>()) << in;
    EXPECT_NEAR(res.error_before, e0.sum().item<double>(), kSameSum * res.error_before);
    EXPECT_NEAR(res.error_after, e1.sum().item<double>(), kSameSum * res.error_before);
    EXPECT_TRUE((e1 <= e0 * (1 + 1e-12)).all().item<bool>());
    EXPECT_GT(res.clipped_fraction, 0.5);
    // The weight is W clamped per group at a grid ratio of the group's max|w|.
    const int64_t groups = (in + 31) / 32;
    ASSERT_EQ(res.ratio.sizes(), (std::vector<int64_t>{out, groups}));
    std::set<int> allowed;
    for (int i = 0; i < 10; ++i) allowed.insert(100 - 5 * i);
    for (int64_t r = 0; r < out; ++r) {
      for (int64_t g = 0; g < groups; ++g) {
        const float ratio = res.ratio[r][g].item<float>();
        EXPECT_TRUE(allowed.count(static_cast<int>(std::lround(ratio * 100))) &&
                    std::abs(ratio * 100 - std::lround(ratio * 100)) < 1e-4)
            << ratio;
        const int64_t gn = std::min<int64_t>(32, in - g * 32);
        auto blk = W[r].narrow(0, g * 32, gn);
        const float t = ratio * blk.abs().max().item<float>();
        EXPECT_TRUE(torch::equal(res.weight[r].narrow(0, g * 32, gn), blk.clamp(-t, t))) << r << " " << g;
      }
    }
  }
}

TEST(AwqClip, NeverRaisesARowsErrorInAnyFormat) {
  torch::manual_seed(12);
  const int64_t out = 24, n = 600;
  struct Case {
    const char* name;
    int64_t in, group;
    model::RoundFn round;
  };
  const std::vector<Case> cases = {
      {"q4_0", 128, 32, [](const torch::Tensor& w) { return round_ggml(w, DType::Q4_0); }},
      {"q4_k", 256, 32, [](const torch::Tensor& w) { return round_ggml(w, DType::Q4_K); }},
      {"q6_k", 256, 16, [](const torch::Tensor& w) { return round_ggml(w, DType::Q6_K); }},
      {"int4 tail", 100, 32, round_int4_sym},
  };
  for (const auto& c : cases) {
    // Correlated inputs with a few large channels; heavy-tailed weights (log-normal magnitudes).
    auto X = torch::matmul(torch::randn({n, c.in}), torch::randn({c.in, c.in}) * 0.2 + torch::eye(c.in));
    X.narrow(1, 0, 5).mul_(4);
    auto W = torch::randn({out, c.in}) * torch::exp(torch::randn({out, c.in}) * 0.6) * 0.02;
    const auto res = model::awq_search_clip(W, second_moment(X), c.group, c.round, {});
    const auto e0 = row_mse(X, c.round(W), W), e1 = row_mse(X, c.round(res.weight), W);
    EXPECT_TRUE((e1 <= e0 * (1 + 1e-12)).all().item<bool>()) << c.name;
    EXPECT_LE(res.error_after, res.error_before) << c.name;
    EXPECT_NEAR(res.error_after, e1.sum().item<double>(), kSameSum * res.error_before) << c.name;
    // 4-bit grids leave something to clip on heavy tails; q6_k (64 levels, ggml's own scale search
    // over the sub-block) may not, and then every row stays unclipped.
    if (c.group == 32) {
      EXPECT_LT(res.error_after, res.error_before) << c.name;
    }
  }
}

TEST(AwqClip, RoundToGridIsWhatGptqWithoutPropagationStores) {
  torch::manual_seed(13);
  const int64_t out = 8, n = 300;
  for (int64_t in : {256, 80}) {
    auto X = torch::randn({n, in});
    X.select(1, 5).zero_();  // a dead input
    model::InputStats st;
    st.add(X, /*hessian=*/true, 0);
    auto W = torch::randn({out, in}) * 0.1;
    model::DenseLinear dense(W);
    model::GptqOptions go;
    go.propagate = false;
    std::vector<std::pair<std::function<std::unique_ptr<model::ColumnQuantizer>()>, std::string>> qs;
    model::IntNParams p;
    p.bits = 4;
    p.group_size = 32;
    p.sym = false;
    p.clip_search = true;
    qs.push_back({[&] { return model::make_intn_column_quantizer(p, out, in); }, "int4 g32 asym"});
    if (in % 256 == 0) {
      for (DType t : {DType::Q4_K, DType::Q4_0, DType::Q6_K})
        qs.push_back({[&, t] { return model::make_ggml_column_quantizer(t, out, in); }, std::string(dtype_name(t))});
    }
    for (auto& [make, name] : qs) {
      auto a = make(), b = make();
      const auto stored = model::gptq_quantize(dense, st, *a, go, "w").layer->dense_weight();
      EXPECT_TRUE(torch::equal(model::round_to_grid(W, st, *b), stored)) << name << " in " << in;
    }
  }
}

ModelConfig config() {
  ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 4;
  c.head_dim = 16;
  c.vocab_size = 90;
  c.tie_word_embeddings = false;
  return c;
}

TEST(AwqClip, SynthModelLayerOutputErrorDrops) {
  torch::NoGradGuard ng;
  torch::manual_seed(14);
  auto m = model::synth_model(config(), 7);
  // Weak norm channels and v_proj weights 6× the largest others on them.
  const std::vector<int64_t> weak = {2, 11, 19, 30, 37, 45, 52, 60};
  const std::string v = "model.layers.0.self_attn.v_proj";
  std::shared_ptr<model::LinearLayer> vl;
  for (auto& [p, l] : m->linear_layers())
    if (p == v) vl = l;
  auto Wv = vl->dense_weight().clone();
  const float big = 6 * Wv.abs().max().item<float>();
  for (int64_t c : weak) {
    m->attn_norm(0)[c] = 0.05f;
    for (int64_t r = 0; r < Wv.size(0); ++r) Wv.index_put_({r, c}, r % 2 ? big : -big);
  }
  m->set_linear(v, std::make_shared<model::DenseLinear>(Wv));
  auto tokens = torch::randint(0, 90, {4, 32}, torch::kInt64);
  model::CalibrateOptions co;
  co.stats.hessian = true;
  torch::Tensor clipped;
  model::ClipSearch reported;
  model::calibrate_layerwise(*m, tokens, co, [&](model::LayerCalibration& lc) {
    if (lc.layer != 0) return;
    auto round_for = [&](const std::string& path) -> std::pair<model::RoundFn, int64_t> {
      if (path != v) return {nullptr, 0};
      return {[](const torch::Tensor& w) { return round_ggml(w, DType::Q4_0); }, 32};
    };
    const auto choices = model::awq_clip_layer(*m, lc, round_for, {});
    ASSERT_EQ(choices.size(), 1u);
    reported = choices[0].search;
    for (auto& [p, l] : m->linear_layers())
      if (p == v) clipped = l->dense_weight().clone();
  });
  ASSERT_TRUE(clipped.defined());
  // Layer 0's v_proj input: x = embed · rsqrt(mean(embed²) + eps) · attn_norm, float64.
  auto e = m->embed_tokens().to(torch::kFloat64).index_select(0, tokens.flatten());
  auto x = e * torch::rsqrt(e.pow(2).mean(-1, true) + config().rms_norm_eps) * m->attn_norm(0).to(torch::kFloat64);
  const double before = row_mse(x, round_ggml(Wv, DType::Q4_0), Wv).sum().item<double>();
  const double after = row_mse(x, round_ggml(clipped, DType::Q4_0), Wv).sum().item<double>();
  EXPECT_LT(after, 0.7 * before);
  // The search saw float32 activations (Σxxᵀ from them): relative agreement within 1e-4.
  EXPECT_NEAR(reported.error_before, before, 1e-4 * before);
  EXPECT_NEAR(reported.error_after, after, 1e-4 * before);
}

using testing::ByteTokenizer;

TEST(AwqClip, QuantizeModelReportsTheClipOutsideQK) {
  const fs::path text = fs::temp_directory_path() / ("llmopt-awqclip-" + std::to_string(::getpid()) + ".txt");
  {
    std::ofstream f(text, std::ios::binary);
    for (int i = 0; i < 400; ++i) f << "the quick brown fox " << i * 7919 % 1000 << " jumps over the lazy dog. ";
  }
  ByteTokenizer tk;
  for (const char* method : {"awq", "awq_gptq"}) {
    for (bool clip : {true, false}) {
      auto m = model::synth_model(config(), 8);
      model::QuantizeSpec spec;
      spec.method = method;
      spec.format = "q4_0";
      spec.awq_clip = clip;
      spec.calibration.path = text.string();
      spec.calibration.samples = 8;
      spec.calibration.seq_len = 32;
      const auto rep = model::quantize_model(*m, &tk, spec);
      // The clip runs before plain rounding only (awq), not before GPTQ (awq_gptq).
      const bool clipping = clip && std::string(method) == "awq";
      int reported = 0;
      for (const auto& l : rep.layers) {
        const bool qk = l.path.find("q_proj") != std::string::npos || l.path.find("k_proj") != std::string::npos;
        if (!clipping || qk) {
          EXPECT_EQ(l.awq_clipped, -1) << l.path;
          continue;
        }
        ++reported;
        EXPECT_GE(l.awq_clipped, 0) << l.path;
        EXPECT_LE(l.awq_clipped, 1) << l.path;
        EXPECT_GE(l.awq_clip_error_ratio, 0) << l.path;
        EXPECT_LE(l.awq_clip_error_ratio, 1) << l.path;
      }
      EXPECT_EQ(reported, clipping ? 2 * 5 : 0) << method;
    }
  }
  fs::remove(text);
}

}  // namespace
}  // namespace llmopt
