// Torch-free Llama-family inference on the CPU (Llama 1/2/3, Mistral, Qwen2): the engine of
// `llmopt generate` and `llmopt bench` on the CPU. It holds the weights as one float32 arena in
// huge-page-advised memory (decode streams every weight once per token), runs prefill as
// OpenBLAS GEMMs and decode as the fused single-token step of weights.h, and needs nothing but
// an io::Checkpoint — so the process that runs it does not load libtorch (whose code and
// registries alone take ~155 MiB of resident memory, more than a fifth of a 134M-parameter model).
// The math is that of model::LlamaModel (fp32, HF rotate-half RoPE, GQA, SwiGLU, RMSNorm);
// tests/model/cpu_llama_test.cpp compares the two engines' logits.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "infer/engine.h"
#include "infer/packed_layers.h"
#include "infer/weights.h"
#include "io/checkpoint.h"
#include "tokenizer/tokenizer.h"

namespace llmopt::infer {

class CpuLlama : public Engine {
 public:
  // Copy: every tensor of `ckpt` goes into the engine's arena (projections stored as ggml
  // blocks / f16 / bf16 kept in that type, Q4_0/Q4_K ones with a multiple of 8 rows in the 8-row
  // interleaved form of kernels/repack.h, everything else converted to f32); the checkpoint may
  // be dropped afterwards. Borrow: tensors already in the type the engine computes with are used
  // where they lie (a memory-mapped file, an in-memory model's tensors), only the others are
  // converted into the arena; the engine keeps the checkpoint's storage alive. Int-N / NF4
  // projections (infer/packed_layers.h: llmopt's own layers, GPTQ's layout) are held packed as
  // stored (Borrow: views of the checkpoint's bytes) and run through kernels/gemv_intn.h.
  // InputError naming the file for missing tensors or wrong shapes.
  enum class Storage { Copy, Borrow };
  explicit CpuLlama(const io::Checkpoint& ckpt, Storage storage = Storage::Copy);
  ~CpuLlama() override;
  CpuLlama(const CpuLlama&) = delete;
  CpuLlama& operator=(const CpuLlama&) = delete;

  // This engine's KV cache (what make_cache returns).
  struct Cache : EngineCache {
    std::vector<std::vector<float>> k, v;  // per layer [n_kv_heads, capacity, head_dim]
    int64_t filled = 0;                    // positions filled
    int64_t cap = 0;
    int64_t length() const override { return filled; }
    int64_t capacity() const override { return cap; }
    void truncate(int64_t n) override;
    int64_t bytes() const override;
  };

  // infer::Engine (src/infer/forward_cpu.cpp): prefill runs OpenBLAS GEMMs over the n rows
  // (n = 1 goes through decode), decode the fused step of decode_step.cpp.
  std::string name() const override { return "native"; }
  std::unique_ptr<EngineCache> make_cache(int64_t capacity) const override;
  void prefill(const int64_t* tokens, int64_t n, EngineCache& cache, float* logits,
               bool all_positions = false) const override;
  void decode(int64_t token, EngineCache& cache, float* logits) const override;

  const ModelConfig& config() const override { return w_.cfg; }
  // Int8 activations for the projections that have integer-dot kernels (Weights::int8_activations;
  // off by default: exact f32 inputs, what the torch engine computes). load_cpu_model turns it on.
  void set_int8_activations(bool on) { w_.int8_activations = on; }
  bool int8_activations() const { return w_.int8_activations; }
  const Weights& weights() const { return w_; }
  // Bytes of the weights as held (f32 or packed), borrowed ones included.
  int64_t weight_bytes() const override { return weight_bytes_; }
  // Bytes of the engine's own arena (what Borrow saves is weight_bytes() - arena_bytes()).
  int64_t arena_bytes() const { return arena_bytes_; }

 private:
  Weights w_;
  std::vector<float> inv_freq_;
  std::unique_ptr<float, void (*)(void*)> arena_;
  std::vector<std::shared_ptr<const void>> borrowed_;  // the checkpoint's storage (Borrow)
  std::vector<std::unique_ptr<PackedProjection>> packed_;  // int-N / NF4 projections as stored
  int64_t weight_bytes_ = 0;
  int64_t arena_bytes_ = 0;
};

// Memory for `bytes` aligned to 2 MiB whose whole 2 MiB pages are advised as transparent huge
// pages (the tail stays on 4 KiB pages so a partial huge page is never backed in full); free()
// releases it. Null when the allocation fails.
void* hugepage_alloc(size_t bytes);

struct LoadedCpuModel {
  std::unique_ptr<CpuLlama> model;
  std::unique_ptr<tok::Tokenizer> tokenizer;  // null when none was found with the model
};
// Any model io::load_checkpoint reads (HF directory, GGUF, llama2.c; `tokenizer_path` overrides
// the tokenizer found with it). The file mappings are released before returning. The engine of
// `llmopt bench / generate / perplexity`: int8 activations on (as llama.cpp computes).
LoadedCpuModel load_cpu_model(const std::string& path, const std::string& tokenizer_path = "");

}  // namespace llmopt::infer
