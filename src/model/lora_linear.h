// LoRA (and DoRA) over any projection: kind "lora". The wrapped base is any LinearLayer (dense,
// packed ggml blocks, ...) and is only ever used through its interface: base->forward(x), and
// base->dense_weight() transiently (DoRA's initial weight norm, gradients through a base whose own
// forward does not carry them, merging). Names and math follow PEFT (huggingface/peft, LoraLayer):
//
//   y = base(x) + scaling · B·A·drop(x)            scaling = alpha / r  (rsLoRA: alpha / sqrt(r))
//   DoRA: y = base(x) + (m / ‖W + s·BA‖ − 1) ⊙ W·drop(x) + (m / ‖W + s·BA‖) ⊙ s·B·A·drop(x)
//
// with the row norm ‖W + s·BA‖ (over the input dimension) detached from the graph as in the DoRA
// paper (§4.3) and PEFT. It is computed without a dense copy of W: ‖W‖² per row once at
// construction, then ‖W‖² + 2s·Σ_k B_ik (W·Aᵀ)_ik + s²·Σ (B·(A·Aᵀ)) ⊙ B with W·Aᵀ from base(A).
//
// A [r, in] (PEFT's lora_A.weight), B [out, r] (lora_B.weight), m [out] (lora_magnitude_vector).
// Stored state: kind "lora", meta {r, alpha, dropout, rslora, dora, bias, merged, base: {kind,
// meta}}, tensors "base.<name>" (the base's own stored tensors, as stored), "lora_A", "lora_B",
// "lora_magnitude" and, for a merged packed base, "orig.<name>" (the unmerged base).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "model/linear.h"
#include "model/llama.h"

namespace llmopt::model {

struct LoraConfig {
  int64_t r = 8;
  double alpha = 16;
  double dropout = 0;
  bool rslora = false;
  bool dora = false;
  std::string bias = "none";  // none | all | lora_only (which biases train, as PEFT's `bias`)
  double scaling() const;
  // InputError "[lora] <option> ..." for r <= 0, alpha <= 0, dropout outside [0, 1), bad bias.
  void validate() const;
  nlohmann::json json() const;
};

class LoraLinear : public LinearLayer {
 public:
  // A fresh adapter: A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's kaiming_uniform(a=sqrt(5))) drawn
  // from a generator seeded with `seed`, B = 0, m = ‖W‖ per row. The base is frozen.
  LoraLinear(std::shared_ptr<LinearLayer> base, const LoraConfig& cfg, uint64_t seed);
  // Given adapter tensors (A [r, in], B [out, r], m [out] or undefined); InputError naming
  // `where` when their shapes do not fit the base.
  LoraLinear(std::shared_ptr<LinearLayer> base, const LoraConfig& cfg, torch::Tensor A, torch::Tensor B,
             torch::Tensor magnitude, const std::string& where);

  torch::Tensor forward(const torch::Tensor& x) override;
  int64_t in_features() const override { return base_->in_features(); }
  int64_t out_features() const override { return base_->out_features(); }
  std::string kind() const override { return "lora"; }
  // W + s·BA (DoRA: scaled to m per row), dense float32.
  torch::Tensor dense_weight() const override;
  torch::Tensor bias() const override { return base_->bias(); }
  int64_t storage_bytes() const override;
  LayerState stored_state() const override;

  // Folds the adapter into the base: a dense base in place; any other base is dequantized, merged
  // and re-packed by the factory of its own kind from a stored state built like its own (the
  // unmerged base is kept for unmerge()). forward() then runs the merged base only.
  void merge();
  void unmerge();
  bool merged() const { return merged_; }
  // The merged projection as a standalone layer of the base's kind (for exports / merge_lora).
  std::shared_ptr<LinearLayer> merged_layer() const;

  const LoraConfig& config() const { return cfg_; }
  const std::shared_ptr<LinearLayer>& base() const { return base_; }
  torch::Tensor& lora_A() { return A_; }
  torch::Tensor& lora_B() { return B_; }
  torch::Tensor& magnitude() { return m_; }  // undefined without DoRA
  // ‖W + s·BA‖ per row [out], detached (DoRA's denominator).
  torch::Tensor weight_norm() const;

 private:
  void init_common();
  torch::Tensor base_forward(const torch::Tensor& x);  // carries d/dx through any base
  torch::Tensor lora_delta() const;                    // s·B·A [out, in]
  std::shared_ptr<LinearLayer> base_;
  std::shared_ptr<LinearLayer> orig_base_;  // the unmerged base of a merged non-dense base
  LoraConfig cfg_;
  torch::Tensor A_, B_, m_;
  torch::Tensor base_norm2_;  // ‖W‖² per row [out], float64, DoRA only
  torch::Tensor merged_norm_;  // weight_norm() at merge time (DoRA unmerge)
  bool merged_ = false;
};

// The factory of kind "lora" (registered with the built-in kinds in linear.cpp).
LinearFactory lora_linear_factory();

// --- applying adapters to a model ---

// PEFT's target_modules: an entry made of name characters only ([A-Za-z0-9_]) matches module paths
// equal to it or ending in "." + it ("q_proj"); any other entry is a regular expression that must
// match the whole path ("model\.layers\.[0-3]\..*_proj"); "all-linear" is every projection but the
// output head. Returns the matching paths of model.linear_layers(), in order; InputError (exit 2)
// naming `option` for an entry that matches nothing or a bad regex.
std::vector<std::string> match_target_modules(LlamaModel& model, const std::vector<std::string>& targets,
                                              const std::string& option = "lora.target_modules");

struct LoraApplyResult {
  std::vector<std::string> paths;  // projections wrapped
  int64_t trainable_params = 0;
  int64_t total_params = 0;
};
// Freezes every parameter of `model`, wraps each matched projection in a fresh LoraLinear (A
// seeded from `seed` and the path's index) and makes the adapter tensors (and biases, per
// cfg.bias) trainable.
LoraApplyResult apply_lora(LlamaModel& model, const std::vector<std::string>& targets, const LoraConfig& cfg,
                           uint64_t seed);
// A frozen projection whose own forward computes on detached inputs (packed, NF4 ...) made to pass
// gradients to its input (d/dx = grad · W, W dequantized for the backward pass only) while
// training adapters elsewhere: everything else (kind, stored state, weights) is the base's own.
class GradThroughLinear : public LinearLayer {
 public:
  explicit GradThroughLinear(std::shared_ptr<LinearLayer> base);
  torch::Tensor forward(const torch::Tensor& x) override;
  int64_t in_features() const override { return base_->in_features(); }
  int64_t out_features() const override { return base_->out_features(); }
  std::string kind() const override { return base_->kind(); }
  torch::Tensor dense_weight() const override { return base_->dense_weight(); }
  torch::Tensor bias() const override { return base_->bias(); }
  int64_t storage_bytes() const override { return base_->storage_bytes(); }
  const void* gemv_weights(DType* type) const override { return base_->gemv_weights(type); }
  LayerState stored_state() const override { return base_->stored_state(); }
  std::optional<StoredTensor> file_weight() const override { return base_->file_weight(); }
  const std::shared_ptr<LinearLayer>& base() const { return base_; }

 private:
  std::shared_ptr<LinearLayer> base_;
};
// Wraps every projection that is neither dense nor LoRA in a GradThroughLinear (so adapters before
// it receive gradients); returns how many. unwrap_grad_through() puts the bases back.
int64_t wrap_grad_through(LlamaModel& model);
void unwrap_grad_through(LlamaModel& model);

// The LoRA layers of `model` by path.
std::vector<std::pair<std::string, std::shared_ptr<LoraLinear>>> lora_layers(LlamaModel& model);
// Replaces every LoRA layer by its merged projection (dense or re-packed base kind); returns how
// many were merged.
int64_t merge_lora(LlamaModel& model);

}  // namespace llmopt::model
