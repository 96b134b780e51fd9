// A projection stored as NF4 (kernels/nf4.h: bitsandbytes' 4-bit NormalFloat, blocks of 64 with
// an absmax each, optionally double-quantized): the QLoRA base layer. Kind "nf4", meta
// {double_quant, in_features}; stored tensors "qweight" (u8 [out, (in + 1) / 2], first element in
// the high nibble), "absmax" (f32) or, double-quantized, "absmax_codes" (i8), "absmax_scales"
// (f32, one per 256 absmax values) and "absmax_offset" (f32 [1]); "bias" (f32, optional).
// forward() never keeps a dense copy (NF4 GEMV for ≤ kernels::kMaxGemvBatch rows, tiles of 64
// dequantized weight rows otherwise).
#pragma once
#include <torch/torch.h>

#include <memory>

#include "kernels/nf4.h"
#include "model/linear.h"

namespace llmopt::model {

class NF4Linear : public LinearLayer {
 public:
  // weight [out, in] f32, bias [out] or undefined. InputError for NaN/Inf weights.
  static std::shared_ptr<NF4Linear> quantize(const torch::Tensor& weight, const torch::Tensor& bias, bool double_quant);
  NF4Linear(kernels::NF4Storage storage, torch::Tensor bias = {});

  torch::Tensor forward(const torch::Tensor& x) override;
  int64_t in_features() const override { return s_->cols; }
  int64_t out_features() const override { return s_->rows; }
  std::string kind() const override { return "nf4"; }
  torch::Tensor dense_weight() const override;
  torch::Tensor bias() const override { return bias_; }
  int64_t storage_bytes() const override;
  LayerState stored_state() const override;

  const kernels::NF4Storage& storage() const { return *s_; }
  kernels::NF4Matrix matrix() const { return s_->view(); }
  bool double_quant() const { return s_->double_quant; }
  double bits_per_weight() const { return s_->view().bits_per_weight(); }

 private:
  std::shared_ptr<kernels::NF4Storage> s_;
  torch::Tensor bias_;
};

LinearFactory nf4_linear_factory();

}  // namespace llmopt::model
