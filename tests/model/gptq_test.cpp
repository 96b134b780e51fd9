// Calibration, GPTQ and AWQ against direct math:
//  - the statistics the hooks record for layer 0 equal Σx² / Σxxᵀ of the RMS-normed embeddings
//    computed here from the model's weights in float64;
//  - GPTQ with an identity Hessian has nothing to compensate (H⁻¹ diagonal), so it must produce
//    exactly the blocks of plain rounding, and each value is the nearest point of its block's
//    grid (|w − q| ≤ d/2 for q8_0, whose grid ±127·d covers the block);
//  - on correlated inputs GPTQ's output error ‖X(W − Q)ᵀ‖² (computed here from the dequantized
//    weights) is clearly below plain rounding's (the point of the method);
//  - AWQ's folding keeps the float model's function (logits within 1e-4: float32 reassociation of
//    a 2-layer model) while rescaling its weights;
//  - calibration data errors name the option, the file and line.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/half.h"
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

ModelConfig config() {
  ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 4;  // MHA: the v -> o fold is exercised too
  c.head_dim = 16;
  c.vocab_size = 90;
  c.tie_word_embeddings = false;
  return c;
}

using testing::ByteTokenizer;

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("llmopt-gptq-" + std::to_string(::getpid()));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::string write(const fs::path& p, const std::string& s) {
  std::ofstream(p, std::ios::binary) << s;
  return p.string();
}

std::shared_ptr<model::LinearLayer> layer_at(model::LlamaModel& m, const std::string& path) {
  for (auto& [p, l] : m.linear_layers())
    if (p == path) return l;
  return nullptr;
}

TEST(Calibration, LayerZeroStatisticsEqualDirectMath) {
  torch::NoGradGuard ng;
  auto m = model::synth_model(config(), 3);
  auto tokens = torch::randint(0, 90, {3, 10}, torch::kInt64);
  model::CalibrateOptions co;
  co.stats.hessian = true;
  co.batch = 2;
  std::shared_ptr<model::InputStats> q0, k0;
  model::calibrate_layerwise(*m, tokens, co, [&](model::LayerCalibration& lc) {
    if (lc.layer == 0) {
      q0 = lc.stats.at("model.layers.0.self_attn.q_proj");
      k0 = lc.stats.at("model.layers.0.self_attn.k_proj");
    }
  });
  ASSERT_TRUE(q0);
  EXPECT_EQ(q0.get(), k0.get());  // q and k read the same input: one set of statistics
  EXPECT_EQ(q0->rows, 30);
  // x = embed · rsqrt(mean(embed²) + eps) · attn_norm, in float64.
  auto e = m->embed_tokens().to(torch::kFloat64).index_select(0, tokens.flatten());
  auto x = e * torch::rsqrt(e.pow(2).mean(-1, true) + config().rms_norm_eps) *
           m->attn_norm(0).to(torch::kFloat64);
  // The hooks see float32 activations (relative error ≤ ~4 ulp = 2^-21 after the norm), so each of
  // the 30 products in an entry is off by ≤ 2·2^-21·max x², the sum by 30× that.
  const double tol = 30 * 2 * std::ldexp(1.0, -21) * x.pow(2).max().item<double>();
  EXPECT_LT((q0->sum_sq - x.pow(2).sum(0)).abs().max().item<double>(), tol);
  EXPECT_LT((q0->hessian - torch::matmul(x.t(), x)).abs().max().item<double>(), tol);
}

model::InputStats identity_stats(int64_t in, int64_t n) {
  model::InputStats st;
  st.rows = n;
  st.sum_sq = torch::full({in}, static_cast<double>(n), torch::kFloat64);
  st.sum_abs = st.sum_sq.clone();
  st.abs_max = torch::ones({in});
  st.hessian = torch::eye(in, torch::kFloat64) * static_cast<double>(n);
  return st;
}

TEST(Gptq, IdentityHessianGivesPlainRoundingToNearestGridPoints) {
  torch::manual_seed(1);
  const int64_t out = 8, in = 64;
  auto W = torch::randn({out, in});
  model::DenseLinear dense(W);
  const auto st = identity_stats(in, 100);
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q5_1}) {
    auto a = model::make_ggml_column_quantizer(t, out, in);
    auto b = model::make_ggml_column_quantizer(t, out, in);
    model::GptqOptions go;
    auto with = model::gptq_quantize(dense, st, *a, go, "w");
    go.propagate = false;
    auto without = model::gptq_quantize(dense, st, *b, go, "w");
    EXPECT_TRUE(torch::equal(with.layer->dense_weight(), without.layer->dense_weight())) << dtype_name(t);
  }
  // q8_0: every value within half a step of its weight.
  auto qz = model::make_ggml_column_quantizer(DType::Q8_0, out, in);
  auto res = model::gptq_quantize(dense, st, *qz, {}, "w");
  auto Q = res.layer->dense_weight();
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t b = 0; b < in / 32; ++b) {
      auto blk = W[r].narrow(0, b * 32, 32);
      const float d = f16_to_f32(f32_to_f16(blk.abs().max().item<float>() / 127.0f));
      const float err = (blk - Q[r].narrow(0, b * 32, 32)).abs().max().item<float>();
      EXPECT_LE(err, d / 2 * (1 + 1e-3) + 1e-7) << r << " " << b;
    }
  }
}

TEST(Gptq, CompensatesRoundingOnCorrelatedInputs) {
  torch::manual_seed(2);
  const int64_t out = 32, in = 64, n = 2048;
  // Inputs with correlated channels and a few large ones (as LLM activations have).
  auto X = torch::matmul(torch::randn({n, in}), torch::randn({in, in}) * 0.3 + torch::eye(in));
  X.narrow(1, 0, 4).mul_(6);
  auto W = torch::randn({out, in}) * 0.05;
  model::InputStats st;
  st.add(X, /*hessian=*/true, 0);
  model::DenseLinear dense(W);
  auto err = [&](const torch::Tensor& Q) {
    return torch::matmul(X.to(torch::kFloat64), (W - Q).t().to(torch::kFloat64)).pow(2).sum().item<double>();
  };
  for (DType t : {DType::Q4_0, DType::Q8_0}) {
    for (bool act_order : {false, true}) {
      auto a = model::make_ggml_column_quantizer(t, out, in);
      auto b = model::make_ggml_column_quantizer(t, out, in);
      model::GptqOptions go;
      go.act_order = act_order;
      const double e_gptq = err(model::gptq_quantize(dense, st, *a, go, "w").layer->dense_weight());
      go.propagate = false;
      const double e_rtn = err(model::gptq_quantize(dense, st, *b, go, "w").layer->dense_weight());
      EXPECT_LT(e_gptq, 0.7 * e_rtn) << dtype_name(t) << " act_order " << act_order;
    }
  }
}

TEST(Awq, FoldedScalesKeepTheFloatFunction) {
  torch::NoGradGuard ng;
  auto m = model::synth_model(config(), 5);
  auto tokens = torch::randint(0, 90, {4, 16}, torch::kInt64);
  // Salient channels: AWQ should find scales worth folding.
  m->attn_norm(0).narrow(0, 0, 3).mul_(8);
  m->ffn_norm(1).narrow(0, 5, 2).mul_(8);
  const auto before = m->forward(tokens);
  std::map<std::string, torch::Tensor> w_before;
  for (auto& [p, l] : m->linear_layers()) w_before[p] = l->dense_weight().clone();
  model::CalibrateOptions co;
  co.stats.sample_rows = 64;
  int scaled = 0;
  model::calibrate_layerwise(*m, tokens, co, [&](model::LayerCalibration& lc) {
    auto fq = [](const torch::Tensor& w, const std::string&) {
      auto src = w.contiguous();
      auto out = torch::empty_like(src);
      std::vector<kernels::BlockQ4_0> blocks(static_cast<size_t>(src.size(1) / 32));
      for (int64_t r = 0; r < src.size(0); ++r) {
        kernels::quantize_row_ref(DType::Q4_0, src[r].data_ptr<float>(), blocks.data(), src.size(1));
        kernels::dequantize_row(DType::Q4_0, blocks.data(), out[r].data_ptr<float>(), src.size(1));
      }
      return out;
    };
    auto none = [](const std::string&) { return false; };
    for (const auto& c : model::awq_scale_layer(*m, lc, fq, none, {})) {
      if (c.alpha > 0) ++scaled;
      EXPECT_LE(c.error_after, c.error_before);
    }
  });
  EXPECT_GT(scaled, 0);
  int changed = 0;
  for (auto& [p, l] : m->linear_layers()) changed += !torch::equal(l->dense_weight(), w_before[p]);
  EXPECT_GT(changed, 0);
  const auto after = m->forward(tokens);
  EXPECT_LT((after - before).abs().max().item<float>(), 1e-4f * std::max(1.0f, before.abs().max().item<float>()));
}

TEST(CalibrationData, ErrorsNameTheOption) {
  TempDir dir;
  ByteTokenizer tk;
  model::CalibrationOptions o;
  o.where = "data.calibration";
  o.samples = 4;
  o.seq_len = 16;
  o.path = write(dir.path / "short.txt", std::string(40, 'a'));
  try {
    model::load_calibration_tokens(o, tk);
    FAIL() << "too little text accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("data.calibration] samples"), std::string::npos) << e.what();
  }
  o.path = write(dir.path / "ok.txt", std::string(200, 'b'));
  EXPECT_EQ(model::load_calibration_tokens(o, tk).sizes(), (std::vector<int64_t>{4, 16}));
  o.path = write(dir.path / "c.jsonl", "{\"text\": \"aaaa\"}\n{\"body\": \"x\"}\n");
  try {
    model::load_calibration_tokens(o, tk);
    FAIL() << "jsonl without the field accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("c.jsonl:2"), std::string::npos) << e.what();
  }
  o.path = (dir.path / "missing.txt").string();
  EXPECT_THROW(model::load_calibration_tokens(o, tk), InputError);
  // Overlap with the evaluation bytes of the same file.
  o.path = (dir.path / "ok.txt").string();
  o.offset = 0;
  o.max_bytes = 100;
  EXPECT_THROW(model::check_calibration_overlap(o, o.path, 50, 0, "data.eval"), InputError);
  EXPECT_NO_THROW(model::check_calibration_overlap(o, o.path, 100, 0, "data.eval"));
  EXPECT_NO_THROW(model::check_calibration_overlap(o, (dir.path / "short.txt").string(), 0, 0, "data.eval"));
}

TEST(QuantizeModel, CalibratedMethodsNeedCalibrationText) {
  model::QuantizeSpec s;
  s.method = "gptq";
  s.format = "q4_0";
  s.calibration.where = "--calibration";
  try {
    model::check_quantize_spec(s);
    FAIL() << "gptq without calibration accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("--calibration"), std::string::npos) << e.what();
  }
  s.method = "nope";
  s.calibration.path = "x.txt";
  EXPECT_THROW(model::check_quantize_spec(s), InputError);
}

}  // namespace
}  // namespace llmopt
