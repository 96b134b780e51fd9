// The one inference interface: prefill / decode / logits over a KV cache. `llmopt generate`,
// `bench`, `eval` and the pipeline's `evaluate` stage all run a model through it, so that a speed
// or a perplexity reported by the CLI and by a pipeline come from the same code.
//
// Implementations: infer::CpuLlama ("native", the torch-free CPU engine: the CPU default) and
// model::TorchEngine ("torch", src/model/torch_engine.h: CUDA, quantized/LoRA layers, training).
// Nothing here includes torch.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "core/model_config.h"

namespace llmopt::infer {

// A KV cache of one sequence, opaque to callers: made by (and only usable with) the engine that
// made it. Positions 0..length()-1 are filled.
class EngineCache {
 public:
  virtual ~EngineCache() = default;
  virtual int64_t length() const = 0;
  virtual int64_t capacity() const = 0;
  // Forgets positions >= n (0 ≤ n ≤ length()); the next token goes to position n.
  virtual void truncate(int64_t n) = 0;
  void reset() { truncate(0); }
  // Bytes the cache holds (keys and values of every layer).
  virtual int64_t bytes() const = 0;
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual const ModelConfig& config() const = 0;
  // "native" or "torch" (reported as `engine` in bench, eval and evaluate-stage results).
  virtual std::string name() const = 0;
  // capacity ≥ 1 positions. InputError otherwise.
  virtual std::unique_ptr<EngineCache> make_cache(int64_t capacity) const = 0;
  // Appends n ≥ 1 tokens at positions cache.length().. and writes float32 logits: those of the
  // last position ([vocab]) or, with all_positions, those of all n positions ([n, vocab], row t
  // predicting the token after tokens[t]). InputError for a token id out of range or n tokens
  // that do not fit the cache (which is then unchanged).
  virtual void prefill(const int64_t* tokens, int64_t n, EngineCache& cache, float* logits,
                       bool all_positions = false) const = 0;
  // One token: prefill with n = 1.
  virtual void decode(int64_t token, EngineCache& cache, float* logits) const = 0;
  // Bytes of the weights as the engine holds them.
  virtual int64_t weight_bytes() const = 0;
};

}  // namespace llmopt::infer
