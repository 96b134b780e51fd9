// Replaceable linear layers. Every projection of the model is a LinearLayer registered under its
// Hugging Face name (e.g. "q_proj"), so a quantization, LoRA or sparsity stage swaps one
// implementation for another with LlamaModel::set_linear() and exports map 1:1 to HF names.
#pragma once
#include <torch/torch.h>

#include <string>

#include "core/dtype.h"

namespace llmopt::model {

class LinearLayer : public torch::nn::Module {
 public:
  // x [..., in_features] -> [..., out_features], float32.
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;
  // "dense", "q8_0", "lora", "sparse", ... (for `info` and reports).
  virtual std::string kind() const = 0;
  // The effective weight as a dense float32 [out, in] tensor (dequantized / merged), for export
  // and for reference checks.
  virtual torch::Tensor dense_weight() const = 0;
  // Optional bias [out] (undefined tensor when absent).
  virtual torch::Tensor bias() const { return {}; }
  // Bytes this layer's weights occupy in memory in their storage format.
  virtual int64_t storage_bytes() const = 0;
  // The weight as one GEMV operand for the fused CPU decode step: row-major [out, in] in the
  // storage type written to *type (any type kernels::gemv accepts), or nullptr when this layer
  // is not a plain (optionally biased) matrix-vector product on the CPU; the model then takes
  // the generic path through forward().
  virtual const void* gemv_weights(DType* type) const { return nullptr; }
};

// Plain float32 weight [out, in] (+ optional bias [out]) as trainable parameters "weight"/"bias".
// Inference with one row (decode) on CPU goes through the bandwidth-bound GEMV kernel of
// src/kernels; everything else (prefill, training, CUDA) through torch::linear.
class DenseLinear : public LinearLayer {
 public:
  DenseLinear(torch::Tensor weight, torch::Tensor bias = {});
  // Zero weights [out, in] (+ zero bias), to be filled by a loader.
  DenseLinear(int64_t out_features, int64_t in_features, bool with_bias);
  torch::Tensor forward(const torch::Tensor& x) override;
  int64_t in_features() const override { return weight_.size(1); }
  int64_t out_features() const override { return weight_.size(0); }
  std::string kind() const override { return "dense"; }
  torch::Tensor dense_weight() const override { return weight_; }
  torch::Tensor bias() const override { return bias_; }
  int64_t storage_bytes() const override;
  const void* gemv_weights(DType* type) const override;
  torch::Tensor& weight() { return weight_; }

 private:
  torch::Tensor weight_;  // [out, in] f32
  torch::Tensor bias_;    // [out] f32 or undefined
};

}  // namespace llmopt::model
