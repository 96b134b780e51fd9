// The model the quickstart recipe starts from when `model.path` is empty: a tiny Llama trained
// for about a minute on text from the project's story grammar (src/train). The trained model is
// kept in the stage cache, so reruns with the same seed, steps and threads reuse it.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "model/llama.h"
#include "tokenizer/tokenizer.h"

namespace llmopt {
class Progress;
}  // namespace llmopt

namespace llmopt::pipeline {

struct QuickstartRequest {
  int64_t steps = 0;  // 0 = the builder's default
  uint64_t seed = 0;
  int threads = 1;
  std::string cache_dir;  // stage cache root ("" = no caching)
  std::string run_dir;
  const std::atomic<bool>* interrupt = nullptr;
  Progress* progress = nullptr;
};

struct QuickstartModel {
  std::shared_ptr<model::LlamaModel> model;
  std::shared_ptr<tok::Tokenizer> tokenizer;
  std::string model_dir;       // where its weights live (cache entry or run dir)
  std::string tokenizer_path;  // its tokenizer file
  std::string eval_text_path;  // held-out grammar text (the default data.eval)
  std::string state_hash;
  bool cached = false;
};

// Throws stages::Interrupted when request.interrupt is set during training.
QuickstartModel build_or_load_quickstart_model(const QuickstartRequest& request);

}  // namespace llmopt::pipeline
