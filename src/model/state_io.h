// A model exactly as it is stored, on disk and in memory: what stage checkpoints, --resume, the
// cache, sweep points and baselines carry between stages. Every projection is written as its
// LinearLayer::stored_state() (packed blocks, scales, adapters, masks ... in their own dtypes) and
// rebuilt by the factory registered for its kind, so a model leaves a stage exactly as it was
// stored: no dense round trip, no re-rounding.
//
// Directory layout (written through a temporary directory and a rename: complete or absent):
//   config.json          the ModelConfig as Hugging Face's config.json
//   llmopt_state.json    {"format": "llmopt-state", "version": 1, "layers": {path: {kind, meta,
//                         tensors: {name: {dtype, shape, key}}}}, "tensors": {name: key}}
//   state.safetensors    every tensor; dtypes safetensors cannot name (ggml blocks) as U8 bytes
#pragma once
#include <memory>
#include <string>

#include "model/llama.h"

namespace llmopt::model {

void save_model_state(LlamaModel& m, const std::string& dir);
// InputError naming the directory for a missing/corrupt state or an unknown layer kind.
std::shared_ptr<LlamaModel> load_model_state(const std::string& dir);
bool is_model_state_dir(const std::string& dir);

// A deep copy that keeps every layer's storage (through stored_state(), in memory).
std::shared_ptr<LlamaModel> clone_model(LlamaModel& m);

}  // namespace llmopt::model
