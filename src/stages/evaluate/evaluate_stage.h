// `evaluate`: perplexity on data.eval, KL divergence against the pipeline's input model, task
// scores (src/eval/harness.h, the tasks of `llmopt eval --tasks`), speed (prefill/decode tokens/s)
// and memory (model bytes, peak RSS). Leaves the model unchanged.
#pragma once
#include <string>
#include <vector>

#include "stages/options.h"
#include "stages/stage.h"
#include "stages/task_holdout_options.h"

namespace llmopt::stages {

struct EvaluateOptions {
  std::vector<std::string> metrics = {"perplexity", "kld", "speed", "memory"};
  int64_t ctx = 0;
  int64_t max_chunks = -1;
  int64_t bench_prompt_tokens = 64;
  int64_t bench_gen_tokens = 32;
  int64_t bench_repetitions = 3;
  std::string engine = "auto";
  std::vector<std::string> tasks;
  int64_t num_fewshot = -1;
  int64_t task_limit = 0;
  std::string task_split = "all";
  TaskHoldoutOptions task_holdout;

  static void describe(Schema<EvaluateOptions>& s) {
    s.field("metrics", &EvaluateOptions::metrics,
            "What to measure: perplexity, kld (vs the pipeline's input model), tasks (scores of the `tasks` "
            "option, as `llmopt eval --tasks`), speed, memory")
        .choices({"perplexity", "kld", "tasks", "speed", "memory"});
    s.field("ctx", &EvaluateOptions::ctx, "Context length override (0 = data.eval.ctx)")
        .range(0, 1 << 20);
    s.field("max_chunks", &EvaluateOptions::max_chunks,
            "Chunk limit override (-1 = data.eval.max_chunks, 0 = all)")
        .range(-1, 1e9);
    s.field("bench_prompt_tokens", &EvaluateOptions::bench_prompt_tokens,
            "speed: prefill length in tokens")
        .range(0, 1 << 20);
    s.field("bench_gen_tokens", &EvaluateOptions::bench_gen_tokens, "speed: tokens decoded")
        .range(0, 1 << 20);
    s.field("bench_repetitions", &EvaluateOptions::bench_repetitions,
            "speed: measured repetitions (mean reported)")
        .range(1, 1000);
    s.field("engine", &EvaluateOptions::engine,
            "Engine for perplexity, kld and speed: auto (native on the CPU when every projection is dense, "
            "ggml blocks, int-N or NF4 and no prompt adapter is attached; torch otherwise), native, torch")
        .choices({"auto", "native", "torch"});
    s.field("tasks", &EvaluateOptions::tasks,
            "tasks: task names (configs/tasks/*.yaml) or task YAML paths; metrics <task>/<metric> "
            "(acc, acc_stderr, ...), <task>/chance, <task>/samples");
    s.field("num_fewshot", &EvaluateOptions::num_fewshot, "tasks: few-shot examples (-1 = each task's num_fewshot)")
        .range(-1, 1000);
    s.field("task_limit", &EvaluateOptions::task_limit, "tasks: score the first N samples of each task (0 = all)")
        .range(0, 1e9);
    s.field("task_split", &EvaluateOptions::task_split,
            "tasks: documents scored: all, or the held_out / train part of task_holdout (as `llmopt eval --split`); "
            "documents a finetune stage of this run trained on (train.task) are an error to score")
        .choices({"all", "train", "held_out"});
    s.field("task_holdout", &EvaluateOptions::task_holdout, "tasks: the held-out part (task_split held_out / train)");
  }
};

class EvaluateStage : public Stage {
 public:
  using Options = EvaluateOptions;
  static constexpr const char* kType = "evaluate";
  static constexpr const char* kDoc =
      "Perplexity, KL divergence vs the input model, task scores, speed and memory";

  explicit EvaluateStage(Options o) : o_(std::move(o)) {}
  std::string type() const override { return kType; }
  void validate(const ModelState& state) const override;
  StageResult run(ModelState& state, StageContext& ctx) override;
  nlohmann::json options_json() const override { return schema_of<Options>().json(o_); }
  std::vector<std::string> input_files(const DataOptions& data) const override;

  bool wants(const std::string& metric) const;

 private:
  Options o_;
};

}  // namespace llmopt::stages
