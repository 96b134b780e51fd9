// The evaluate stage's `tasks` metric and `llmopt eval --tasks` run the same harness on the same
// engine: on stories260K (native engine, same thread count) both report the same per-task
// scores; bad task options fail in validate() (before any stage runs).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../common/reference_files.h"
#include "../pipeline/pipeline_test_util.h"
#include "core/error.h"
#include "model/loader.h"
#include "stages/evaluate/evaluate_stage.h"
#include "stages/model_state.h"

namespace llmopt::testing {
namespace {

TEST(EvaluateTasks, StageAndCliReportTheSameScores) {
  const fs::path dir = make_temp_dir("eval-tasks");
  const std::string model = testref::kStories + "stories260K.bin", tok = testref::kStories + "tok512.bin";
  const fs::path out = dir / "eval.json";
  const auto cli = run_llmopt("-q eval " + shell_quote(model) + " --tokenizer " + shell_quote(tok) +
                              " --tasks arc_easy,lambada_openai --limit 16 --json " + shell_quote(out.string()));
  ASSERT_EQ(cli.exit_code, 0) << cli.output;
  const nlohmann::json j = nlohmann::json::parse(read_text(out));

  model::ModelLoadOptions lo;
  lo.tokenizer_path = tok;
  model::LoadedModel lm = model::load_model(model, lo);
  stages::ModelState state;
  state.model = lm.model;
  state.tokenizer = lm.tokenizer;
  stages::StageContext ctx;
  ctx.run_dir = dir.string();
  ctx.artifacts_dir = dir.string();
  ctx.stage_name = "evaluate";
  stages::EvaluateOptions o;
  o.metrics = {"tasks"};
  o.tasks = {"arc_easy", "lambada_openai"};
  o.task_limit = 16;
  stages::EvaluateStage stage(o);
  stage.validate(state);
  const nlohmann::json m = stage.run(state, ctx).metrics;
  EXPECT_EQ(m["engine"], "native");
  EXPECT_EQ(j["engine"], "native");
  for (const char* key : {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr"})
    EXPECT_EQ(m[std::string("arc_easy/") + key], j["tasks"]["arc_easy"][key]) << key;
  EXPECT_EQ(m["arc_easy/samples"], 16);
  EXPECT_DOUBLE_EQ(m["arc_easy/chance"].get<double>(), 0.25);
  for (const char* key : {"acc", "perplexity"})
    EXPECT_EQ(m[std::string("lambada_openai/") + key], j["tasks"]["lambada_openai"][key]) << key;
  fs::remove_all(dir);
}

TEST(EvaluateTasks, BadTaskOptionsFailValidation) {
  model::ModelLoadOptions lo;
  lo.tokenizer_path = testref::kStories + "tok512.bin";
  model::LoadedModel lm = model::load_model(testref::kStories + "stories260K.bin", lo);
  stages::ModelState state;
  state.model = lm.model;
  state.tokenizer = lm.tokenizer;
  auto validate = [&](std::vector<std::string> metrics, std::vector<std::string> tasks) {
    stages::EvaluateOptions o;
    o.metrics = std::move(metrics);
    o.tasks = std::move(tasks);
    stages::EvaluateStage(o).validate(state);
  };
  EXPECT_THROW(validate({"tasks"}, {}), InputError);
  EXPECT_THROW(validate({"perplexity"}, {"arc_easy"}), InputError);
  try {
    validate({"tasks"}, {"arc_eazy"});
    FAIL() << "no InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("arc_easy, boolq"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace llmopt::testing
