// The finetune stage in a run: LoRA on the tiny model trains (validation loss below the base's
// loss on the same rows, computed here from the input model), writes a PEFT adapter into
// artifacts/adapter that reproduces the adapted model's logits on the input model, logs one
// train_step event per step in events.jsonl, keeps the LoRA layers in the stage checkpoint, and
// a target module that matches nothing fails the run with exit 2.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "model/loader.h"
#include "model/lora_adapter.h"
#include "model/lora_linear.h"
#include "model/state_io.h"
#include "pipeline/recipe.h"
#include "pipeline/runner.h"
#include "pipeline_test_util.h"
#include "tiny_model.h"
#include "train/finetune_data.h"

namespace llmopt::testing {
namespace {

pipeline::RunOutcome run(const fs::path& recipe, const fs::path& out) {
  const pipeline::Recipe r = pipeline::load_recipe(recipe.string());
  pipeline::RunOptions o;
  o.out_dir = out.string();
  o.use_cache = false;
  o.quiet = true;
  return pipeline::run_recipe(r, o);
}

TEST(FinetunePipeline, LoraStageTrainsWritesAdapterAndEvents) {
  const fs::path dir = make_temp_dir("finetune-pipeline");
  const TinyModel t = make_tiny_model(dir, 30000);
  const std::string pipe =
      "  - type: finetune\n"
      "    lora: {r: 4, alpha: 8, target_modules: [all-linear], dora: true}\n"
      "    train: {path: " + t.eval_text.string() + ", seq_len: 32}\n"
      "    val: {fraction: 0.2}\n"
      "    max_steps: 12\n    batch_size: 4\n    lr: 0.01\n    eval_every: 4\n";
  write_text(dir / "r.yaml", tiny_recipe(t, pipe));
  const auto a = run(dir / "r.yaml", dir / "a");
  ASSERT_EQ(a.exit_code, 0) << a.error;
  const auto& m = a.metrics["stages"][0]["metrics"];
  ASSERT_TRUE(m.contains("val_loss")) << m.dump();
  EXPECT_EQ(m["steps"].get<int64_t>(), 12);
  EXPECT_EQ(m["lora_layers"].get<int64_t>(), 14);

  // The validation rows' loss under the input model, computed here: training must have lowered it.
  auto base = model::load_model(t.model_dir.string(), {t.tokenizer.string()});
  train::FinetuneDataOptions dopt;
  dopt.path = t.eval_text.string();
  dopt.seq_len = 32;
  dopt.val_fraction = 0.2;
  const auto data = train::load_finetune_data(dopt, *base.tokenizer, 4);
  const double base_val = train::dataset_loss(*base.model, *data.val, 4);
  EXPECT_LT(m["val_loss"].get<double>(), base_val - 0.05) << "base " << base_val;

  // events.jsonl: a train_step per step, with loss, lr, grad_norm.
  int steps = 0, with_val = 0;
  std::stringstream ev(read_text(dir / "a" / "events.jsonl"));
  for (std::string line; std::getline(ev, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j["event"] != "train_step") continue;
    ++steps;
    EXPECT_TRUE(j.contains("loss") && j.contains("lr") && j.contains("grad_norm")) << line;
    with_val += j.contains("val_loss");
  }
  EXPECT_EQ(steps, 12);
  EXPECT_EQ(with_val, 3);

  // The adapter applied to the input model computes what the stage's model computes.
  auto trained = model::load_model_state((dir / "a" / "state" / "stage-0" / "model").string());
  EXPECT_EQ(model::lora_layers(*trained).size(), 14u);
  model::load_peft_adapter(*base.model, (dir / "a" / "artifacts" / "adapter").string());
  base.model->eval();
  trained->eval();
  torch::NoGradGuard g;
  const auto ids = data.val->rows(0, 1).slice(1, 0, 20);
  EXPECT_TRUE(torch::allclose(base.model->forward(ids), trained->forward(ids), 0, 1e-5));

  // A target that matches nothing: exit 2.
  write_text(dir / "bad.yaml",
             tiny_recipe(t, "  - type: finetune\n    lora: {target_modules: [c_attn]}\n    train: {path: " +
                                t.eval_text.string() + "}\n    max_steps: 1\n"));
  const auto b = run(dir / "bad.yaml", dir / "b");
  EXPECT_EQ(b.exit_code, 2) << b.error;
  EXPECT_NE(b.error.find("c_attn"), std::string::npos) << b.error;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmopt::testing
