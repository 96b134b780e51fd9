// The built-in stages on a tiny model: evaluate's metrics and KL divergence against a different
// baseline, export's files loading back to the same weights.
#include <gtest/gtest.h>

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

TEST(EvaluateStage, KldAgainstADifferentBaselineIsPositive) {
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
  EXPECT_GT(r.metrics["kld_mean"].get<double>(), 0.0);
  EXPECT_FALSE(r.metrics.contains("perplexity"));
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
