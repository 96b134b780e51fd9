// What flows from stage to stage: the model (modules + weights in whatever storage the stages
// chose), its tokenizer, where it came from and which stages touched it, the pipeline's input
// model kept as the baseline for KL divergence, and the artifacts written so far.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/model_config.h"
#include "model/llama.h"
#include "model/loader.h"
#include "tokenizer/tokenizer.h"

namespace llmopt::stages {

struct Provenance {
  std::string source_path;     // model file/dir the pipeline started from ("" = quickstart build)
  std::string tokenizer_path;  // tokenizer file, when given separately
  std::vector<std::string> stages_applied;  // "index:name(type)" of every stage that ran
};

struct ModelState {
  std::shared_ptr<model::LlamaModel> model;
  std::shared_ptr<tok::Tokenizer> tokenizer;
  // The pipeline's input model. The same object as `model` until a stage modifies the model
  // (Stage::modifies_model()); the runner then keeps a separate copy.
  std::shared_ptr<model::LlamaModel> baseline;
  Provenance provenance;
  // Artifact name -> path relative to the run directory ("artifacts/model.gguf").
  std::map<std::string, std::string> artifacts;
  // Content hash of the weights+tokenizer this state holds (cache keys; see pipeline/cache.h).
  std::string state_hash;

  const ModelConfig& config() const { return model->config(); }
  bool has_model() const { return model != nullptr; }
  bool baseline_is_current() const { return baseline == model; }
};

// Deep copy of a model (through its canonical F32 checkpoint), for keeping a baseline.
std::shared_ptr<model::LlamaModel> clone_model(model::LlamaModel& m);

}  // namespace llmopt::stages
