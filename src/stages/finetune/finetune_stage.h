// `finetune`: trains the model on text or instruction data with the shared training loop
// (src/train/trainer.h). Method `lora` wraps the targeted projections in LoRA / DoRA layers
// (model::LoraLinear, over any base kind: dense or packed) that stay in the model for the next
// stages and checkpoints, and writes a PEFT adapter to artifacts/adapter/; method `full` trains
// every weight (or the parameters matching `trainable`); methods prompt / prefix / ptuning put a
// model::PromptAdapter (virtual tokens, key/value prefixes, or an MLP prompt encoder) in front of
// the frozen model and write it as a PEFT prompt-learning adapter. Per-step metrics go to events.jsonl
// (event "train_step"); a trainer checkpoint every `save_every` steps (and on Ctrl-C) lets
// `llmopt run --resume` continue mid-stage with the same bytes.
#pragma once
#include <string>
#include <vector>

#include "stages/data_config.h"
#include "stages/options.h"
#include "stages/stage.h"
#include "stages/task_holdout_options.h"

namespace llmopt::stages {

struct FinetuneLoraOptions {
  int64_t r = 8;
  double alpha = 16;
  double dropout = 0;
  std::vector<std::string> target_modules = {"all-linear"};
  bool rslora = false;
  bool dora = false;
  std::string bias = "none";

  static void describe(Schema<FinetuneLoraOptions>& s) {
    s.field("r", &FinetuneLoraOptions::r, "LoRA rank").range(1, 1 << 16);
    s.field("alpha", &FinetuneLoraOptions::alpha, "LoRA alpha: the update is scaled by alpha / r (rslora: alpha / sqrt(r))")
        .min(1e-12);
    s.field("dropout", &FinetuneLoraOptions::dropout, "Dropout on the LoRA branch's input while training").range(0, 0.999);
    s.field("target_modules", &FinetuneLoraOptions::target_modules,
            "Projections to adapt: module names (matched as path suffixes, e.g. q_proj), regular expressions over "
            "module paths, or all-linear (every projection but the output head); one that matches nothing is an error");
    s.field("rslora", &FinetuneLoraOptions::rslora, "Rank-stabilized scaling alpha / sqrt(r)");
    s.field("dora", &FinetuneLoraOptions::dora, "DoRA: a trained magnitude per output row over the LoRA direction");
    s.field("bias", &FinetuneLoraOptions::bias, "Biases trained: none, all, or lora_only (of the adapted projections)")
        .choices({"none", "all", "lora_only"});
  }
};

struct FinetunePromptOptions {
  int64_t num_virtual_tokens = 20;
  std::string init = "random";
  std::string init_text;
  int64_t encoder_hidden = 0;

  static void describe(Schema<FinetunePromptOptions>& s) {
    s.field("num_virtual_tokens", &FinetunePromptOptions::num_virtual_tokens,
            "Virtual tokens (prompt, ptuning) or key/value prefix positions per layer (prefix)")
        .range(1, 1 << 16);
    s.field("init", &FinetunePromptOptions::init,
            "Method prompt: random (N(0,1), PEFT's RANDOM) or text (the token embeddings of init_text, repeated or "
            "cut to num_virtual_tokens)")
        .choices({"random", "text"});
    s.field("init_text", &FinetunePromptOptions::init_text, "Method prompt, init text: the initializing text");
    s.field("encoder_hidden", &FinetunePromptOptions::encoder_hidden,
            "Method ptuning: hidden width of the prompt encoder MLP (0 = the model's hidden size)")
        .range(0, 1 << 20);
  }
};

struct FinetuneTrainDataOptions {
  std::string path;
  std::string format = "auto";
  int64_t seq_len = 256;
  int64_t offset = 0;
  int64_t max_bytes = 0;
  std::string chat_template = "auto";
  std::string eos = "auto";
  std::string task;
  TaskHoldoutOptions task_holdout;

  static void describe(Schema<FinetuneTrainDataOptions>& s) {
    s.field("path", &FinetuneTrainDataOptions::path, "Training data: a text file, or instruction jsonl (or give task)")
        .existing_path();
    s.field("format", &FinetuneTrainDataOptions::format,
            "auto (.jsonl = instruction), text (packed into seq_len blocks), jsonl (prompt/response or messages; "
            "loss on the response tokens only)")
        .choices({"auto", "text", "jsonl"});
    s.field("seq_len", &FinetuneTrainDataOptions::seq_len, "Predicted tokens per training row").range(1, 1 << 20);
    s.field("offset", &FinetuneTrainDataOptions::offset, "Text: first byte of the file used").range(0, 1e15);
    s.field("max_bytes", &FinetuneTrainDataOptions::max_bytes, "Text: bytes used from offset (0 = to the end)")
        .range(0, 1e15);
    s.field("chat_template", &FinetuneTrainDataOptions::chat_template,
            "jsonl `messages`: chat template (auto: the built-in the model's chat_template is, plain when it has "
            "none; plain: 'User: ...' lines, 'Assistant: ' + the learned reply; chatml, llama2, llama3, zephyr, "
            "mistral, gemma, phi3: that format, learning the assistant content and its end-of-turn marker)")
        .choices({"auto", "plain", "chatml", "llama2", "llama3", "zephyr", "mistral", "gemma", "phi3"});
    s.field("eos", &FinetuneTrainDataOptions::eos,
            "jsonl: an EOS target after each response (prompt/response and the plain template). auto: unless the "
            "line says \"eos\": false, as task data for log-likelihood tasks does (the harness never scores an EOS); "
            "true: always (teaches the model to stop; on stories260K SST-2 it trained better); false: never")
        .choices({"auto", "true", "false"});
    s.field("task", &FinetuneTrainDataOptions::task,
            "Instead of path: a task (configs/tasks name or YAML) whose training part becomes instruction jsonl "
            "(as `llmopt data instruct`: prompt = the context the task scores, response = the gold choice), written "
            "to artifacts/instruct-<task>.jsonl");
    s.field("task_holdout", &FinetuneTrainDataOptions::task_holdout,
            "task: the documents held out of training (an evaluate stage scores them with task_split held_out)");
  }
};

struct FinetuneValOptions {
  std::string path;
  double fraction = 0;
  static void describe(Schema<FinetuneValOptions>& s) {
    s.field("path", &FinetuneValOptions::path, "Validation file in the training format (empty: split by fraction)")
        .existing_path();
    s.field("fraction", &FinetuneValOptions::fraction, "Tail of the training rows held out for validation")
        .range(0, 0.9);
  }
};

struct FinetuneOptions {
  std::string method = "lora";
  FinetuneLoraOptions lora;
  FinetunePromptOptions prompt;
  FinetuneTrainDataOptions train;
  FinetuneValOptions val;
  std::vector<std::string> trainable;
  int64_t max_steps = 300;
  int64_t batch_size = 8;
  int64_t grad_accum = 1;
  double lr = 2e-3;
  double min_lr = 0;
  std::string schedule = "cosine";
  int64_t warmup = 0;
  double weight_decay = 0;
  double clip = 1.0;
  int64_t eval_every = 0;
  int64_t patience = 0;
  int64_t save_every = 0;
  int64_t seed = 0;
  bool merge = false;
  bool grad_checkpoint = false;
  std::string merge_requant = "auto";
  CalibrationDataOptions merge_calibration;

  static void describe(Schema<FinetuneOptions>& s) {
    s.field("method", &FinetuneOptions::method,
            "lora (adapters, base frozen), qlora (the adapted projections first quantized to NF4, double-quantized, "
            "dequantized on the fly), full (train the weights), or prompt learning with the base frozen: prompt "
            "(virtual token embeddings), prefix (per-layer key/value prefixes), ptuning (virtual tokens from an MLP "
            "prompt encoder)")
        .choices({"lora", "qlora", "full", "prompt", "prefix", "ptuning"});
    s.field("lora", &FinetuneOptions::lora, "LoRA settings (method lora)");
    s.field("prompt", &FinetuneOptions::prompt, "Prompt-learning settings (methods prompt, prefix, ptuning)");
    s.field("train", &FinetuneOptions::train, "Training data");
    s.field("val", &FinetuneOptions::val, "Validation data (loss every eval_every steps, early stopping)");
    s.field("trainable", &FinetuneOptions::trainable,
            "Method full: regular expressions over parameter names that train (empty: all)");
    s.field("max_steps", &FinetuneOptions::max_steps, "Optimizer steps").range(1, 1e9);
    s.field("batch_size", &FinetuneOptions::batch_size, "Rows per micro-batch").range(1, 1 << 20);
    s.field("grad_accum", &FinetuneOptions::grad_accum, "Micro-batches per optimizer step").range(1, 1 << 20);
    s.field("lr", &FinetuneOptions::lr, "Peak learning rate (AdamW)").range(1e-12, 10);
    s.field("min_lr", &FinetuneOptions::min_lr, "Learning rate at the end of a linear / cosine decay").range(0, 10);
    s.field("schedule", &FinetuneOptions::schedule, "Learning rate after warmup: constant, linear or cosine decay")
        .choices({"constant", "linear", "cosine"});
    s.field("warmup", &FinetuneOptions::warmup, "Steps of linear warmup").range(0, 1e9);
    s.field("weight_decay", &FinetuneOptions::weight_decay, "AdamW decoupled weight decay (matrices only)").range(0, 10);
    s.field("clip", &FinetuneOptions::clip, "Gradient clipping: max global L2 norm (0 = off)").range(0, 1e9);
    s.field("eval_every", &FinetuneOptions::eval_every, "Steps between validation losses (0 = only at the end)")
        .range(0, 1e9);
    s.field("patience", &FinetuneOptions::patience,
            "Early stopping: validations without a new best before stopping (0 = never)")
        .range(0, 1e9);
    s.field("save_every", &FinetuneOptions::save_every, "Steps between trainer checkpoints (resume mid-stage; 0 = "
                                                        "only on interrupt)")
        .range(0, 1e9);
    s.field("seed", &FinetuneOptions::seed, "Seeds the LoRA initialization and the data order (0 = the recipe's seed)")
        .range(0, 1e15);
    s.field("merge", &FinetuneOptions::merge,
            "Merge the adapters into the base after training (packed bases: dequantize, merge, re-pack; the merged "
            "model's KL divergence from the adapter model is reported)");
    s.field("grad_checkpoint", &FinetuneOptions::grad_checkpoint,
            "Gradient checkpointing: each decoder layer is run again in the backward pass instead of keeping its "
            "activations (less memory, about one more forward pass of time)");
    s.field("merge_requant", &FinetuneOptions::merge_requant,
            "Merge into a quantized base (ggml blocks, int-N, NF4): re-quantize the merged weights by rtn (round to "
            "nearest) or gptq (GPTQ on calibration inputs; both KLDs are reported); auto = gptq when calibration "
            "data is given (merge_calibration or data.calibration), else rtn")
        .choices({"auto", "rtn", "gptq"});
    s.field("merge_calibration", &FinetuneOptions::merge_calibration,
            "Calibration text for merge_requant gptq (empty path: data.calibration)");
  }
};

class FinetuneStage : public Stage {
 public:
  using Options = FinetuneOptions;
  static constexpr const char* kType = "finetune";
  static constexpr const char* kDoc = "Fine-tune (LoRA / DoRA adapters, prompt / prefix / P-tuning, or full) on text or instruction data";

  explicit FinetuneStage(Options o) : o_(std::move(o)) {}
  std::string type() const override { return kType; }
  bool modifies_model() const override { return true; }
  void validate(const ModelState& state) const override;
  StageResult run(ModelState& state, StageContext& ctx) override;
  nlohmann::json options_json() const override { return schema_of<Options>().json(o_); }
  std::vector<std::string> input_files(const DataOptions& data) const override;

 private:
  Options o_;
};

}  // namespace llmopt::stages
