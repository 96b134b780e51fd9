// What flows from stage to stage: the model (modules + weights in whatever storage the stages
// chose), its tokenizer, where it came from and which stages touched it, the pipeline's input
// model kept as the baseline for KL divergence, and the artifacts written so far.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/model_config.h"
#include "infer/engine.h"
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
  // The pipeline's input model, the baseline for KL divergence. Until a stage modifies the model
  // (Stage::modifies_model()) it is `model` itself. Afterwards it is read back from the input
  // file (provenance.source_path, memory-mapped by the loader) when an evaluation asks for it
  // (baseline_model()), instead of a dense copy kept in memory between stages; `baseline` holds
  // an in-memory copy only where one exists anyway (a sweep's shared prefix) or the input has no
  // file.
  std::shared_ptr<model::LlamaModel> baseline;
  bool model_modified = false;
  Provenance provenance;
  // Artifact name -> path relative to the run directory ("artifacts/model.gguf").
  std::map<std::string, std::string> artifacts;
  // Content hash of the weights+tokenizer this state holds (cache keys; see pipeline/cache.h).
  std::string state_hash;

  const ModelConfig& config() const { return model->config(); }
  bool has_model() const { return model != nullptr; }
  bool baseline_is_current() const { return !model_modified; }
  // The baseline model: `model` while unmodified, else the in-memory copy or the input file read
  // now (not kept). Null when there is none.
  std::shared_ptr<model::LlamaModel> baseline_model() const;
  // An engine over the baseline for KL divergence (null while the model is unmodified: the
  // baseline is the model). The native engine reads the input file memory-mapped where it is
  // stored in the types it computes with, rather than a dense copy; "torch" loads baseline_model().
  std::unique_ptr<infer::Engine> baseline_engine(const std::string& engine_choice) const;
  // Called before a stage modifies `model` in place: drops the baseline's alias of it (keeping a
  // storage-preserving copy only when the input cannot be read back from a file).
  void before_modification();
};

// Deep copy of a model that keeps every layer's storage (model::clone_model).
std::shared_ptr<model::LlamaModel> clone_model(model::LlamaModel& m);

}  // namespace llmopt::stages
