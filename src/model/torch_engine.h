// model::LlamaModel (libtorch) behind the one inference interface (infer/engine.h): the engine
// for CUDA, for models whose layers the native engine cannot run as they are (quantized, LoRA,
// custom LinearLayers) and for anything that trains. Logits come back as float32 on the host.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>

#include "infer/engine.h"
#include "model/llama.h"

namespace llmopt::model {

class TorchEngine : public infer::Engine {
 public:
  // Runs `model` where it is (model->device()); the model is shared, not copied.
  explicit TorchEngine(std::shared_ptr<LlamaModel> model);

  // The torch engine's cache: model::KVCache of batch 1 on the model's device.
  struct Cache : infer::EngineCache {
    KVCache kv;
    // Positions of real tokens: a prompt adapter's reserved virtual positions are not counted.
    int64_t length() const override { return kv.primed ? kv.length - kv.reserved : kv.length; }
    int64_t capacity() const override { return kv.capacity - kv.reserved; }
    void truncate(int64_t n) override;
    int64_t bytes() const override { return kv.bytes(); }
  };

  const ModelConfig& config() const override { return model_->config(); }
  std::string name() const override { return "torch"; }
  std::unique_ptr<infer::EngineCache> make_cache(int64_t capacity) const override;
  void prefill(const int64_t* tokens, int64_t n, infer::EngineCache& cache, float* logits,
               bool all_positions = false) const override;
  void decode(int64_t token, infer::EngineCache& cache, float* logits) const override;
  int64_t weight_bytes() const override { return model_->storage_bytes(); }

  LlamaModel& model() const { return *model_; }

 private:
  std::shared_ptr<LlamaModel> model_;
};

// True when every projection of `m` is a plain DenseLinear, a PackedLinear (ggml blocks, f16,
// bf16), an IntNLinear or an NF4Linear on the CPU: the native engine built from
// model_to_checkpoint(m, Packed) holds the
// same stored bytes and computes the same function, so it may stand in for it. LoRA, sparse or
// other layers keep their own forward (and their own speed) only in the torch engine.
bool native_equivalent(LlamaModel& m);

// The engine that runs an in-memory model for evaluation and benchmarks, by name:
// "native" — infer::CpuLlama built from model_to_checkpoint(*m, Packed) (borrowing the model's
// tensors, packed ones kept packed; InputError unless native_equivalent(*m)); "torch" —
// TorchEngine(m); "auto" — native when native_equivalent(*m), torch otherwise.
std::unique_ptr<infer::Engine> make_engine(const std::shared_ptr<LlamaModel>& m, const std::string& choice);

}  // namespace llmopt::model
