// Prompt-learning adapters (issue 10), with the semantics of Hugging Face peft 0.12
// (tuners/prompt_tuning, prefix_tuning, p_tuning and PeftModelForCausalLM.forward):
//
//   prompt   n virtual token embeddings [n, dim] (`embedding.weight`) are prepended to the token
//            embeddings; the virtual tokens take positions 0..n-1, the real tokens n..n+T-1, and
//            every real token attends to all virtual ones (causal mask over n+T positions).
//   ptuning  the same, with the virtual embeddings the output of PEFT's PromptEncoder (MLP
//            reparameterization): embedding [n, dim] -> Linear(dim, H) -> ReLU -> Linear(H, H)
//            -> ReLU -> Linear(H, dim) (`mlp_head.0/2/4.{weight,bias}`; H = encoder_hidden_size).
//   prefix   per-layer past keys and values: `embedding.weight` [n, layers*2*kv_dim] (PEFT's
//            PrefixEncoder without projection; kv_dim = kv_heads*head_dim, PEFT's token_dim for
//            grouped-query models) viewed as [n, layers*2, kv_heads, head_dim]: row 2l holds layer
//            l's keys, 2l+1 its values, used as they are (no RoPE on them, as transformers'
//            past_key_values). Real tokens take positions n..n+T-1 and attend to all n prefixes.
//
// The model returns logits of the real tokens only. The adapter is an optional part of
// LlamaModel (LlamaModel::set_prompt_adapter); its parameters are those of PEFT's
// `prompt_encoder.default` ("prompt_encoder.embedding.weight", "prompt_encoder.mlp_head.0.weight",
// ...), so trainer checkpoints carry them, and it travels through stage checkpoints as a
// LayerState (state_io).
//
// On disk (PEFT's save_pretrained): adapter_config.json (peft_type PROMPT_TUNING / PREFIX_TUNING /
// P_TUNING, task_type CAUSAL_LM, num_virtual_tokens, token_dim, num_transformer_submodules 1,
// num_attention_heads, num_layers, ...) and adapter_model.safetensors with one tensor
// `prompt_embeddings`: the virtual embeddings [n, dim] (for P-tuning the encoder's output: PEFT
// keeps only that, the MLP is not saved) or the flat prefix [n, layers*2*kv_dim].
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/model_config.h"
#include "model/linear.h"

namespace llmopt::model {

class LlamaModel;

struct PromptAdapterConfig {
  std::string method = "prompt";  // prompt | prefix | ptuning
  int64_t num_virtual_tokens = 20;
  int64_t encoder_hidden = 0;      // ptuning: hidden width of the MLP (0 = token_dim, PEFT's default)
  // Only carried into adapter_config.json (prompt method): PEFT's prompt_tuning_init RANDOM|TEXT.
  std::string init = "random";
  std::string init_text;
  // InputError naming the option for a bad method or num_virtual_tokens <= 0.
  void validate() const;
};

// PEFT's token_dim of `method` for `cfg`: hidden_size, or for prefix kv_heads*head_dim.
int64_t prompt_token_dim(const std::string& method, const ModelConfig& cfg);

class PromptAdapter : public torch::nn::Module {
 public:
  // A fresh adapter of `cfg` for a model of `mc`, initialized as PEFT does: the embedding
  // N(0, 1), the P-tuning MLP as torch.nn.Linear (weights and biases U(-1/sqrt(in), 1/sqrt(in)));
  // `seed` makes it deterministic.
  PromptAdapter(const PromptAdapterConfig& cfg, const ModelConfig& mc, uint64_t seed);
  // An inference adapter holding PEFT's saved `prompt_embeddings` (P-tuning becomes its
  // output embeddings, as PEFT's inference mode uses them). InputError naming `where` and the
  // tensor when the shape does not fit `mc`.
  PromptAdapter(const PromptAdapterConfig& cfg, const ModelConfig& mc, const torch::Tensor& prompt_embeddings,
                const std::string& where);

  const PromptAdapterConfig& config() const { return cfg_; }
  const std::string& method() const { return cfg_.method; }
  int64_t num_virtual_tokens() const { return cfg_.num_virtual_tokens; }
  bool is_prefix() const { return cfg_.method == "prefix"; }
  // True while the P-tuning MLP is present (a trained, not a loaded, adapter).
  bool has_encoder() const { return static_cast<bool>(mlp_); }

  // prompt / ptuning: the virtual embeddings [n, dim] (through the MLP for P-tuning).
  torch::Tensor virtual_embeddings();
  // prefix: keys and values of layer li, [kv_heads, n, head_dim] each.
  std::pair<torch::Tensor, torch::Tensor> prefix_kv(int64_t li);
  // What PEFT's save_pretrained writes as `prompt_embeddings` (float32, CPU, detached).
  torch::Tensor prompt_embeddings();
  // prompt: replaces the embedding by the token embeddings of `ids` repeated / cut to n rows
  // (PEFT's prompt_tuning_init TEXT).
  void init_from_tokens(const torch::Tensor& token_embeddings, const std::vector<int64_t>& ids);

  torch::Tensor& embedding() { return embedding_; }
  // The trainable parameters (embedding, and the MLP for P-tuning).
  std::vector<torch::Tensor> trainable();

  // The adapter as stored (kind "prompt_adapter", meta = the config, tensors by parameter name)
  // and back (InputError naming `where`).
  LayerState stored_state() const;
  static std::shared_ptr<PromptAdapter> from_state(const LayerState& s, const ModelConfig& mc,
                                                   const std::string& where);

 private:
  PromptAdapterConfig cfg_;
  ModelConfig mc_;
  torch::Tensor embedding_;       // [n, token_dim] or prefix [n, layers*2*kv_dim]
  torch::nn::Sequential mlp_{nullptr};  // ptuning only
};

// Attaches a new trainable adapter of `cfg` to `model` (every other parameter frozen) and returns
// it. `text_ids` (prompt method, init text): token ids whose embeddings initialize the prompt.
std::shared_ptr<PromptAdapter> apply_prompt_adapter(LlamaModel& model, const PromptAdapterConfig& cfg, uint64_t seed,
                                                    const std::vector<int64_t>& text_ids = {});

struct PromptAdapterSaveOptions {
  std::string base_model_name_or_path;
};
// Writes adapter_config.json and adapter_model.safetensors (PEFT layout) of the model's prompt
// adapter into `dir` (files written to a temporary and renamed). InputError if it has none.
void save_prompt_adapter(LlamaModel& model, const std::string& dir, const PromptAdapterSaveOptions& opts);
// Reads a PEFT PROMPT_TUNING / PREFIX_TUNING / P_TUNING adapter directory into `model` (frozen).
// InputError (exit 2) naming the file and field/tensor when num_virtual_tokens, token_dim,
// num_layers, num_attention_heads or the tensor shape do not fit the base.
std::shared_ptr<PromptAdapter> load_prompt_adapter(LlamaModel& model, const std::string& dir);

// The peft_type of an adapter directory's adapter_config.json (InputError when unreadable).
std::string peft_adapter_type(const std::string& dir);
// Loads any adapter llmopt reads (LoRA family through load_peft_adapter, prompt learning here).
void load_any_adapter(LlamaModel& model, const std::string& dir);

}  // namespace llmopt::model
