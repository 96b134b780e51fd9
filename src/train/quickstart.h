// The quickstart model: with no model given, the README's main command trains a tiny Llama
// (~0.85M parameters) from nothing in about a minute on 2 cores: story-grammar text -> a 512-piece
// SentencePiece-style BPE tokenizer -> next-token training with the reusable Trainer. Same seed +
// same thread count give byte-identical weights (a fixed step count, never a time limit).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "core/model_config.h"
#include "model/loader.h"
#include "train/trainer.h"

namespace llmopt::train {

// Files build_quickstart_model writes into QuickstartOptions::output_dir.
inline constexpr const char* kQuickstartTokenizerFile = "tokenizer.bin";   // llama2.c format
inline constexpr const char* kQuickstartEvalTextFile = "eval_stories.txt";  // held-out text
inline constexpr const char* kQuickstartInfoFile = "quickstart.json";      // what was built

struct QuickstartOptions {
  // Required. Receives tokenizer.bin, eval_stories.txt (held-out grammar text, a different seed:
  // the default data.eval when none is given) and quickstart.json (config, options, loss curve).
  std::string output_dir;
  uint64_t seed = 0;
  int64_t steps = 0;                 // 0 = kDefaultQuickstartSteps
  size_t train_text_bytes = 800000;  // grammar text the tokenizer and model learn from
  size_t eval_text_bytes = 60000;    // held-out grammar text written for evaluation
  int64_t vocab_size = 512;
  // Optional: periodic checkpoints (every 100 steps) and resume after an interruption.
  std::string checkpoint_dir;
  const std::atomic<bool>* cancel = nullptr;  // set -> RunError after the current step
  // Optional: changes the training hyper-parameters before training (experiments, tests).
  std::function<void(TrainerOptions&)> adjust_training;
};

// 250 steps x 16 x 128 tokens: 0.3-0.5 s of CPU time per step on the development machine's
// AMD EPYC cores (measured single-threaded while other builds ran), so 75-125 s on one thread and
// roughly a minute on two idle cores (see docs/training.md). The loss has flattened by then
// (held-out perplexity ~1.5 on grammar text).
inline constexpr int64_t kDefaultQuickstartSteps = 250;

// The architecture: dim 128, 4 layers, 4 heads (head_dim 32), 2 KV heads, SwiGLU 384, tied
// embeddings, trained at context 128.
ModelConfig quickstart_model_config(int64_t vocab_size);
// The training hyper-parameters for a number of steps (0 = default) and seed.
TrainerOptions quickstart_trainer_options(int64_t steps, uint64_t seed);

struct QuickstartProgress {
  std::string phase;       // "text", "tokenizer", "train"
  std::string message;     // one line for humans
  TrainProgress training;  // phase "train" only
};
using QuickstartProgressFn = std::function<void(const QuickstartProgress&)>;

// Builds and trains the model. The result's tokenizer is the one loaded back from
// output_dir/tokenizer.bin (path in tokenizer_path); `path` is output_dir; source_info holds
// {"quickstart": {...}} with the config, steps, seed, final loss, tokens seen and seconds.
// Throws InputError for bad options, RunError when cancelled.
model::LoadedModel build_quickstart_model(const QuickstartOptions& options,
                                          const QuickstartProgressFn& progress = {});

}  // namespace llmopt::train
