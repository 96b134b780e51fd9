// W8A8: int8 weights per output channel (symmetric, f32 scale per row) and int8 activations,
// multiplied exactly in integers (int8·int8 summed: every partial sum is an integer below 2^31 for
// in < 133 000, computed in float64, which holds such integers exactly) and rescaled.
//   dynamic: each row of x (each token) gets its own scale absmax/127 computed at run time;
//            LLM.int8()-style outlier decomposition: input columns whose |x| exceeds `threshold`
//            (6.0 as in bitsandbytes) are taken out of the integer product and computed in float,
//            from a kept f16 copy of those weight columns when calibration named them
//            ("outlier_cols"), else from the int8 weight columns dequantized (as bitsandbytes).
//   static:  one activation scale fixed from calibration (per tensor); values beyond its range are
//            clamped to ±127. Calibrated outlier columns are kept in float as in dynamic mode.
// Kind "w8a8", meta {mode, threshold, in_features}; stored tensors "qweight" (i8 [out, in]),
// "wscale" (f32 [out]), "act_scale" (f32 [1], static only), "outlier_cols" (i64 [k]) and
// "outlier_w" (f16 [out, k]) when k > 0, "bias" (f32, optional).
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>

#include "model/linear.h"

namespace llmopt::model {

struct W8A8Params {
  std::string mode = "dynamic";  // dynamic | static
  double threshold = 6.0;        // outlier |x| (≤ 0: no decomposition)
};

class W8A8Linear : public LinearLayer {
 public:
  // weight [out, in] f32; outlier_cols [k] int64 input columns kept in f16 (may be empty);
  // act_scale: static mode's activation step (> 0), ignored in dynamic mode.
  static std::shared_ptr<W8A8Linear> quantize(const torch::Tensor& weight, const torch::Tensor& bias,
                                              const W8A8Params& p, const torch::Tensor& outlier_cols = {},
                                              double act_scale = 0);
  W8A8Linear(torch::Tensor qweight, torch::Tensor wscale, torch::Tensor bias, W8A8Params p, torch::Tensor outlier_cols,
             torch::Tensor outlier_w, torch::Tensor act_scale);

  torch::Tensor forward(const torch::Tensor& x) override;
  int64_t in_features() const override { return qweight_.size(1); }
  int64_t out_features() const override { return qweight_.size(0); }
  std::string kind() const override { return "w8a8"; }
  torch::Tensor dense_weight() const override;  // int8 · scale, kept f16 columns overwritten
  torch::Tensor bias() const override { return bias_; }
  int64_t storage_bytes() const override;
  LayerState stored_state() const override;

  const W8A8Params& params() const { return p_; }
  const torch::Tensor& qweight() const { return qweight_; }       // i8 [out, in]
  const torch::Tensor& wscale() const { return wscale_; }         // f32 [out]
  const torch::Tensor& outlier_cols() const { return cols_; }     // i64 [k]
  const torch::Tensor& outlier_weight() const { return colw_; }   // f16 [out, k]
  double act_scale() const { return act_scale_.defined() ? act_scale_.item<double>() : 0; }

 private:
  W8A8Params p_;
  torch::Tensor qweight_, wscale_, bias_, cols_, colw_, act_scale_;
};

void check_w8a8_params(const W8A8Params& p, const std::string& option);
LinearFactory w8a8_linear_factory();

}  // namespace llmopt::model
