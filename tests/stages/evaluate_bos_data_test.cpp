// One BOS rule and one inference interface for `llmopt eval` and the pipeline's `evaluate` stage:
// on a model whose tokenizer adds BOS (stories260K, llama2.c tokenizer) and on one whose
// tokenizer does not (tinyllama-bpe-17m, GPT-2 BPE with add_bos_token false), the CLI and the
// stage report the same protocol, BOS use, engine, perplexity and KL divergence against the same
// baseline. Both run the native engine with the same thread count on the same f32 weights, so
// the numbers agree to the last bits; kSame allows for summation order only.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../common/reference_files.h"
#include "../pipeline/pipeline_test_util.h"
#include "model/loader.h"
#include "stages/evaluate/evaluate_stage.h"
#include "stages/model_state.h"

namespace llmopt::testing {
namespace {

constexpr double kSame = 1e-9;  // relative

struct Case {
  std::string model, tokenizer, baseline;  // baseline "" = made here (`llmopt synth`, same tokenizer)
  bool expect_bos;
};

void cli_and_stage_agree(const Case& c, const std::string& tag) {
  const fs::path dir = make_temp_dir(tag);
  const fs::path text = dir / "text.txt";
  write_text(text, testref::read_file(testref::kShared + "/text/tinystories_val.txt").substr(0, 40000));
  std::string baseline = c.baseline;
  if (baseline.empty()) {  // a different (random-weight) model with the same vocabulary
    baseline = (dir / "synth").string();
    const auto conv = run_llmopt("-q synth --dim 64 --layers 2 --heads 4 --kv-heads 4 --ffn 128 --seed 3 --tokenizer " +
                                 shell_quote(c.model + "/tokenizer.json") + " " + shell_quote(baseline));
    ASSERT_EQ(conv.exit_code, 0) << conv.output;
  }
  const std::string tok_arg = c.tokenizer.empty() ? "" : " --tokenizer " + shell_quote(c.tokenizer);
  const fs::path out = dir / "eval.json";
  const auto cli = run_llmopt("-q eval " + shell_quote(c.model) + tok_arg + " --data " + shell_quote(text.string()) +
                              " --ctx 128 --limit 12 --baseline " + shell_quote(baseline) + " --json " +
                              shell_quote(out.string()));
  ASSERT_EQ(cli.exit_code, 0) << cli.output;
  const nlohmann::json j = nlohmann::json::parse(read_text(out));

  model::ModelLoadOptions lo;
  lo.tokenizer_path = c.tokenizer;
  model::LoadedModel lm = model::load_model(c.model, lo);
  stages::ModelState state;
  state.model = lm.model;
  state.tokenizer = lm.tokenizer;
  state.baseline = model::load_model(baseline, lo).model;
  state.model_modified = true;  // as after a stage that changed it: KLD against `baseline`
  stages::DataOptions data;
  data.eval.path = text.string();
  data.eval.ctx = 128;
  data.eval.max_chunks = 12;
  stages::StageContext ctx;
  ctx.run_dir = dir.string();
  ctx.artifacts_dir = dir.string();
  ctx.data = &data;
  ctx.stage_name = "evaluate";
  stages::EvaluateOptions o;
  o.metrics = {"perplexity", "kld"};
  stages::EvaluateStage stage(o);
  stage.validate(state);
  const nlohmann::json m = stage.run(state, ctx).metrics;

  EXPECT_EQ(j["protocol"], "llamacpp");
  EXPECT_EQ(m["protocol"], "llamacpp");
  EXPECT_EQ(j["bos"].get<bool>(), c.expect_bos);
  EXPECT_EQ(m["bos"].get<bool>(), c.expect_bos);
  EXPECT_EQ(j["bos_id"], m["bos_id"]);
  EXPECT_EQ(j["engine"], "native");
  EXPECT_EQ(m["engine"], "native");
  EXPECT_EQ(j["ctx"], m["ctx"]);
  EXPECT_EQ(j["chunks"].get<int64_t>(), 12);
  EXPECT_EQ(m["chunks"].get<int64_t>(), 12);
  EXPECT_EQ(j["tokens"].get<int64_t>(), 12 * 63);  // 128-token chunks score positions 64..126
  EXPECT_EQ(m["tokens"], j["tokens"]);
  for (const char* key : {"perplexity", "nll_mean", "kld_mean", "kld_p99", "top1_agreement", "delta_p_rms"}) {
    const double a = j[key].get<double>(), b = m[key].get<double>();
    EXPECT_NEAR(a, b, kSame * std::max(1.0, std::fabs(a))) << key;
  }
  EXPECT_GT(j["kld_mean"].get<double>(), 0.0);
  std::printf("%s: perplexity %.4f  kld_mean %.3g  bos %s\n", tag.c_str(), j["perplexity"].get<double>(),
              j["kld_mean"].get<double>(), c.expect_bos ? "yes" : "no");
  fs::remove_all(dir);
}

TEST(EvaluateBosData, Stories260KUsesBosCliAndStageAgree) {
  cli_and_stage_agree({testref::kStories + "stories260K.bin", testref::kStories + "tok512.bin",
                       testref::kStories + "stories260K.llamacpp-Q4_K_M.gguf", true},
                      "bos-stories");
}

// llama.cpp's llama-perplexity leaves the chunks of a model without BOS as they are; `llmopt
// eval` used to write BOS id -1 into them (exit 1) and the stage used id 1.
TEST(EvaluateBosData, Tiny17mHasNoBosCliAndStageAgree) {
  cli_and_stage_agree({testref::kTiny17m, "", "", false}, "bos-17m");
}

}  // namespace
}  // namespace llmopt::testing
