// The built-in stages on a tiny model: evaluate's metrics and KL divergence against a different
// baseline, export's files loading back to the same weights.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include "../pipeline/tiny_model.h"
#include "model/loader.h"
#include "stages/evaluate/evaluate_stage.h"
#include "stages/export/export_stage.h"
#include "stages/model_state.h"

namespace llmopt::testing {
namespace {

struct Fixture {
  fs::path dir;
  TinyModel tiny;
  stages::ModelState state;
  stages::DataOptions data;
  stages::StageContext ctx;
};

Fixture make_fixture(const std::string& tag) {
  Fixture f;
  f.dir = make_temp_dir(tag);
  f.tiny = make_tiny_model(f.dir, 8000);
  model::ModelLoadOptions lo;
  lo.tokenizer_path = f.tiny.tokenizer.string();
  model::LoadedModel lm = model::load_model(f.tiny.model_dir.string(), lo);
  f.state.model = lm.model;
  f.state.tokenizer = lm.tokenizer;
  f.state.baseline = lm.model;
  f.state.provenance.tokenizer_path = f.tiny.tokenizer.string();
  f.data.eval.path = f.tiny.eval_text.string();
  f.data.eval.ctx = 32;
  f.ctx.run_dir = f.dir.string();
  f.ctx.artifacts_dir = (f.dir / "artifacts").string();
  fs::create_directories(f.ctx.artifacts_dir);
  f.ctx.data = &f.data;
  f.ctx.stage_name = "test";
  return f;
}

TEST(EvaluateStage, PerplexityAndSelfKld) {
  Fixture f = make_fixture("eval");
  stages::EvaluateOptions o;
  o.metrics = {"perplexity", "kld", "memory"};
  stages::EvaluateStage stage(o);
  stage.validate(f.state);
  const stages::StageResult r = stage.run(f.state, f.ctx);
  const double ppl = r.metrics["perplexity"].get<double>();
  // Random N(0, 0.02) weights predict nearly uniformly: perplexity close to the vocabulary size.
  const double vocab = static_cast<double>(f.state.config().vocab_size);
  EXPECT_GT(ppl, 0.5 * vocab);
  EXPECT_LT(ppl, 2.0 * vocab);
  EXPECT_GT(r.metrics["tokens"].get<int64_t>(), 0);
  EXPECT_EQ(r.metrics["kld_mean"].get<double>(), 0.0);
  EXPECT_EQ(r.metrics["top1_agreement"].get<double>(), 1.0);
  EXPECT_GT(r.metrics["model_bytes"].get<int64_t>(), 0);
}

// KL divergence and top-1 agreement of the stage (native engine, src/eval) against a direct
// computation on the torch engine, for a perturbed model.
TEST(EvaluateStage, KldAgainstADifferentBaselineMatchesDirectComputation) {
  Fixture f = make_fixture("kld");
  f.state.baseline = stages::clone_model(*f.state.model);
  f.state.model_modified = true;  // as after a stage that changed the model
  {
    torch::NoGradGuard g;
    f.state.model->embed_tokens().mul_(3.0);  // a different model
  }
  stages::EvaluateOptions o;
  o.metrics = {"kld"};
  stages::EvaluateStage stage(o);
  const stages::StageResult r = stage.run(f.state, f.ctx);
  EXPECT_EQ(r.metrics["engine"], "native");
  EXPECT_GT(r.metrics["kld_mean"].get<double>(), 0.0);
  EXPECT_FALSE(r.metrics.contains("perplexity"));

  // Direct computation, independent of src/eval and of the native engine the stage ran: the
  // torch engine's forward of both models over the llamacpp chunks (ctx tokens, BOS first when the
  // tokenizer adds one), log-softmax in float64, positions ctx/2 .. ctx-2.
  const tok::Tokenizer& tk = *f.state.tokenizer;
  tok::EncodeOptions eo;
  eo.add_bos = tk.add_bos_default() && tk.bos_id() >= 0;
  const std::vector<int32_t> ids = tk.encode(read_text(f.tiny.eval_text), eo);
  const int64_t ctx = f.data.eval.ctx, chunks = static_cast<int64_t>(ids.size()) / ctx;
  torch::NoGradGuard g;
  double kld = 0, tol = 0, spread = 0;
  int64_t n = 0, agree = 0, near_ties = 0;
  std::vector<double> row_spread;
  for (int64_t c = 0; c < chunks; ++c) {
    std::vector<int64_t> w(ids.begin() + c * ctx, ids.begin() + (c + 1) * ctx);
    if (eo.add_bos) w[0] = tk.bos_id();
    const auto in = torch::tensor(w, torch::kLong).view({1, -1});
    const auto lm = f.state.model->forward(in)[0].to(torch::kFloat64);
    const auto lb = f.state.baseline->forward(in)[0].to(torch::kFloat64);
    // Each fp32 engine's logits are within 1e-5 x their scale of the exact ones (the float64
    // reference tests of tests/model and tests/eval): the two engines within twice that.
    tol = std::max({tol, 2e-5 * std::max({1.0, lm.abs().max().item<double>(), lb.abs().max().item<double>()})});
    const auto pm = torch::log_softmax(lm, -1), pb = torch::log_softmax(lb, -1);
    for (int64_t p = ctx / 2; p <= ctx - 2; ++p) {
      kld += (pb[p].exp() * (pb[p] - pm[p])).sum().item<double>();
      spread = std::max(spread, (pb[p].exp() * (pb[p] - pm[p]).abs()).sum().item<double>());
      const auto tm = std::get<0>(lm[p].topk(2)), tb = std::get<0>(lb[p].topk(2));
      agree += lm[p].argmax().item<int64_t>() == lb[p].argmax().item<int64_t>();
      if ((tm[0] - tm[1]).item<double>() < 2 * tol || (tb[0] - tb[1]).item<double>() < 2 * tol) ++near_ties;
      ++n;
    }
  }
  ASSERT_GT(n, 0);
  EXPECT_EQ(r.metrics["tokens"].get<int64_t>(), n);
  // Log-probabilities within 2·tol: KL's terms move by ≤ p_b·4·tol + 2·tol·p_b·|lp_b − lp_m|.
  EXPECT_NEAR(r.metrics["kld_mean"].get<double>(), kld / static_cast<double>(n), 4 * tol + 2 * tol * spread);
  // An argmax may flip only where the top two logits are closer than the engines' difference.
  EXPECT_NEAR(r.metrics["top1_agreement"].get<double>(), static_cast<double>(agree) / static_cast<double>(n),
              static_cast<double>(near_ties) / static_cast<double>(n));
  std::printf("stage kld_mean %.6g (direct %.6g, tol %.2g), top1 %.4f (direct %.4f, %lld near ties of %lld)\n",
              r.metrics["kld_mean"].get<double>(), kld / static_cast<double>(n), 4 * tol + 2 * tol * spread,
              r.metrics["top1_agreement"].get<double>(), static_cast<double>(agree) / static_cast<double>(n),
              static_cast<long long>(near_ties), static_cast<long long>(n));
}

TEST(ExportStage, WritesEveryFormatAndTheyLoadBack) {
  Fixture f = make_fixture("export");
  stages::ExportOptions o;
  o.formats = {"gguf", "hf", "llama2c"};
  o.dtype = "f32";
  stages::ExportStage stage(o);
  stage.validate(f.state);
  const stages::StageResult r = stage.run(f.state, f.ctx);
  ASSERT_FALSE(r.artifacts.empty());
  for (const auto& a : r.artifacts) EXPECT_TRUE(fs::exists(f.dir / a)) << a;
  EXPECT_TRUE(fs::exists(f.dir / "artifacts" / "model.gguf"));
  EXPECT_TRUE(fs::exists(f.dir / "artifacts" / "model-hf" / "config.json"));
  // No temporaries left behind.
  for (const auto& e : fs::directory_iterator(f.dir / "artifacts"))
    EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
  const model::LoadedModel back = model::load_model((f.dir / "artifacts" / "model.gguf").string());
  const torch::Tensor a = f.state.model->embed_tokens();
  const torch::Tensor b = back.model->embed_tokens();
  EXPECT_TRUE(torch::equal(a, b));  // f32 export is exact
}

}  // namespace
}  // namespace llmopt::testing
