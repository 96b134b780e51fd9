// Loading any supported model file into a LlamaModel + Tokenizer, and turning a model back into a
// torch-free io::Checkpoint for the writers.
#pragma once
#include <memory>
#include <string>

#include "io/checkpoint.h"
#include "model/llama.h"
#include "tokenizer/tokenizer.h"

namespace llmopt::model {

struct ModelLoadOptions {
  std::string tokenizer_path;  // overrides/supplies the tokenizer (llama2.c needs one)
  bool check_finite = true;
};

struct LoadedModel {
  std::shared_ptr<LlamaModel> model;
  std::shared_ptr<tok::Tokenizer> tokenizer;  // may be null if none could be found
  io::ModelFormat format = io::ModelFormat::HfDir;
  std::string path;
  std::string tokenizer_path;
  int64_t file_bytes = 0;  // bytes of the tensors as stored in the source file(s)
  nlohmann::json source_info;  // per-tensor name/dtype/shape/bytes from the file, metadata
};

LoadedModel load_model(const std::string& path, const ModelLoadOptions& opts = {});
// Builds a LlamaModel from a checkpoint: projections in ggml block formats stay packed
// (PackedLinear); everything else becomes f32.
std::shared_ptr<LlamaModel> model_from_checkpoint(const io::Checkpoint& ckpt);
// Dense: every tensor as F32 (dequantized / merged). AsStored: each projection whose
// LinearLayer::file_weight() exists keeps its storage (packed ggml blocks are not re-rounded).
// Packed: AsStored, and each layer whose kind the native engine binds as stored
// (infer::native_stored_kind: int-N, NF4) as its stored_state() tensors `<module>#<name>` with
// metadata "llmopt_layers" (infer/packed_layers.h), no dense copy: the native engine's input
// (model::make_engine), not a file format's.
enum class CheckpointWeights { Dense, AsStored, Packed };
// The model's weights as canonical HF-named tensors (owned by the returned checkpoint).
io::Checkpoint model_to_checkpoint(LlamaModel& model, CheckpointWeights weights = CheckpointWeights::Dense);

}  // namespace llmopt::model
