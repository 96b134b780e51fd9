// Llama-family decoder (Llama 1/2/3, Mistral, Qwen2) on libtorch: RMSNorm, RoPE (HF rotate-half
// layout; loaders convert other layouts), grouped-query attention, SwiGLU MLP, KV cache.
// fp32 math. Device-agnostic: move with model->to(device); inputs follow the model's device.
// Parameters and submodules carry Hugging Face names, so named_parameters() yields
// the HF names of the architecture description (io/architecture.h).
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/model_config.h"
#include "model/linear.h"

namespace llmopt::model {

class PromptAdapter;  // model/prompt_adapter.h

// Per-layer key/value cache for incremental decoding.
struct KVCache {
  std::vector<torch::Tensor> k, v;  // per layer [B, n_kv_heads, capacity, head_dim]
  int64_t length = 0;               // positions filled
  int64_t capacity = 0;
  // With a prompt adapter: the first `reserved` positions hold its virtual tokens (prefix keys
  // and values, or the virtual prompt run through the model), filled by the first forward call
  // (`primed`); make_cache adds them to the capacity asked for.
  int64_t reserved = 0;
  bool primed = false;
  int64_t bytes() const;
};

class LlamaModel : public torch::nn::Module {
 public:
  explicit LlamaModel(const ModelConfig& cfg);

  // tokens [B, T] int64 -> logits [B, T, vocab] f32. With a cache, the T tokens are appended at
  // positions cache->length.. and the cache advances; without one, positions are 0..T-1 (causal).
  // With a prompt adapter the n virtual tokens come first (positions 0..n-1, in the cache's
  // reserved positions) and the logits are those of the T real tokens only.
  torch::Tensor forward(const torch::Tensor& tokens, KVCache* cache = nullptr);
  // Hidden states after the final norm [B, T, dim] (for evaluators that want features).
  torch::Tensor forward_hidden(const torch::Tensor& tokens, KVCache* cache = nullptr);
  torch::Tensor logits_from_hidden(const torch::Tensor& hidden);

  // The forward pass one decoder layer at a time (calibration runs it so, to keep only one
  // layer's activations in memory): x = embed(tokens); for each li: x = forward_layer(li, x, in);
  // forward_hidden = final norm of x. `in` holds RoPE tables and the causal mask for T positions
  // starting at pos0 (the cache's length when a cache is passed).
  struct LayerInputs {
    torch::Tensor cos, sin, mask;  // mask undefined when nothing is hidden
    int64_t T = 0, pos0 = 0;
    // Without a cache: per layer keys / values [B, n_kv_heads, pos0, head_dim] of the positions
    // before pos0 (a prefix adapter's), attended to by every query; empty when none.
    std::vector<torch::Tensor> past_k, past_v;
  };
  LayerInputs layer_inputs(int64_t T, int64_t pos0 = 0) const;
  torch::Tensor embed(const torch::Tensor& tokens);
  torch::Tensor forward_layer(int64_t li, const torch::Tensor& x, const LayerInputs& in, KVCache* cache = nullptr);
  int64_t num_layers() const;
  // RMSNorm weights before attention / MLP of layer li (AWQ folds input scales into them).
  torch::Tensor& attn_norm(int64_t li);
  torch::Tensor& ffn_norm(int64_t li);

  KVCache make_cache(int64_t batch, int64_t capacity) const;
  const ModelConfig& config() const { return cfg_; }

  // Every replaceable projection with its full HF module path, e.g.
  // (io::arch::LinearInfo::path, layer), in the architecture description's order; the output
  // head is included unless tied to the embedding.
  std::vector<std::pair<std::string, std::shared_ptr<LinearLayer>>> linear_layers();
  // Replaces the projection at `path` (as listed by linear_layers()).
  void set_linear(const std::string& path, std::shared_ptr<LinearLayer> layer);

  // The optional prompt-learning adapter (prompt / prefix / P-tuning), registered as the
  // submodule "prompt_encoder"; null removes it.
  void set_prompt_adapter(std::shared_ptr<PromptAdapter> adapter);
  PromptAdapter* prompt_adapter() const { return prompt_.get(); }
  std::shared_ptr<PromptAdapter> prompt_adapter_ptr() const { return prompt_; }

  torch::Tensor& embed_tokens() { return embed_tokens_; }  // [vocab, dim]
  torch::Tensor& final_norm() { return norm_; }            // [dim]
  torch::Device device() const;
  // Bytes of all weights in their storage formats.
  int64_t storage_bytes();

 private:
  struct Layer;
  // Fused single-token CPU step (decode_cpu.cpp) when the cache, norms and every projection
  // are plain CPU float32 GEMV operands; an undefined tensor otherwise.
  torch::Tensor try_decode_fused(int64_t token, KVCache& cache);
  // Fills a fresh cache's reserved positions from the prompt adapter.
  void prime_cache(KVCache& cache);
  ModelConfig cfg_;
  std::shared_ptr<PromptAdapter> prompt_;
  torch::Tensor embed_tokens_;
  torch::Tensor norm_;
  std::vector<std::shared_ptr<Layer>> layers_;
  std::shared_ptr<LinearLayer> lm_head_;  // null when tied
  torch::Tensor rope_inv_freq_;          // [head_dim/2], with llama3 scaling applied
};

}  // namespace llmopt::model
