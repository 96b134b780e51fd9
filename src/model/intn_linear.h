// A projection stored as group-wise int-N codes (kernels/intn.h): 2..8 bits, groups of 32/64/128
// input columns or the whole row (int8 per output channel = bits 8, whole row), symmetric or
// asymmetric, optional act-order g_idx (GPTQ's desc_act). Kind "intn", meta {bits, group_size
// (-1 = whole row), sym, act_order, in_features}; stored tensors "qweight" (u8 codes, one bit
// stream per row), "scales" (f16 [out, groups]; f32 when the storage keeps f32 scales, as loaded
// from a GPTQ checkpoint saved in f32), "qzeros" (u8, asym only), "g_idx" (i32 [in],
// act-order only), "bias" (f32, optional).
// forward() never keeps a dense copy: up to kernels::kMaxGemvBatch rows go through the int-N
// GEMV, larger inputs dequantize 64 rows of the weight at a time and multiply them.
// The HF export writes these layers (bits 4 and 8) in GPTQ's layout (io/gptq.h).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "kernels/intn.h"
#include "model/linear.h"

namespace llmopt::model {

struct IntNParams {
  int bits = 4;
  int64_t group_size = 128;  // 32, 64, 128, or -1 for the whole row (per output channel)
  bool sym = true;
  bool clip_search = false;  // RTN only: per-group range shrink minimizing (weighted) error
};

// InputError naming `option` unless bits is 2..8 and group_size is 32, 64, 128 or -1.
void check_intn_params(const IntNParams& p, const std::string& option);

class IntNLinear : public LinearLayer {
 public:
  // Round to nearest: weight [out, in] f32 (any device), bias [out] or undefined.
  // `col_importance` [in] (optional, ≥ 0): per-input-column weights of the squared error the
  // clip search minimizes (e.g. mean x² from calibration). InputError for bad params, NaN/Inf.
  static std::shared_ptr<IntNLinear> quantize(const torch::Tensor& weight, const torch::Tensor& bias,
                                              const IntNParams& p, const torch::Tensor& col_importance = {});
  // From values a method chose (GPTQ, AWQ): codes [out, in] uint8 (each < 2^bits), grids
  // [out · groups] row-major (group g of row r at r·groups + g; scales exact f16 values, zero =
  // 2^(bits−1) when sym), g_idx [in] (empty: column j in group j / group_size).
  static std::shared_ptr<IntNLinear> from_codes(const torch::Tensor& codes, const std::vector<kernels::IntNGrid>& grids,
                                                const torch::Tensor& bias, const IntNParams& p,
                                                const std::vector<int32_t>& g_idx = {});
  IntNLinear(kernels::IntNStorage storage, torch::Tensor bias = {});

  torch::Tensor forward(const torch::Tensor& x) override;
  int64_t in_features() const override { return s_->cols; }
  int64_t out_features() const override { return s_->rows; }
  std::string kind() const override { return "intn"; }
  torch::Tensor dense_weight() const override;
  torch::Tensor bias() const override { return bias_; }
  int64_t storage_bytes() const override;
  LayerState stored_state() const override;

  const kernels::IntNStorage& storage() const { return *s_; }
  kernels::IntNMatrix matrix() const { return s_->view(); }
  int bits() const { return s_->bits; }
  int64_t group_size() const { return s_->group; }  // -1: whole row
  bool sym() const { return s_->sym; }
  bool act_order() const { return !s_->g_idx.empty(); }
  // Codes, scales and zeros per weight (bias and g_idx not counted).
  double bits_per_weight() const { return s_->view().bits_per_weight(); }
  // How GPTQ chose the codes, when it did (meta "gptq": {desc_act, static_groups}), for the HF
  // export's quantization_config: columns by decreasing H_jj, grids fitted before the sweep
  // (act-order with static groups keeps g_idx contiguous, so act_order() alone cannot tell).
  struct GptqProcess {
    bool desc_act = false;
    bool static_groups = false;
  };
  const std::optional<GptqProcess>& gptq_process() const { return gptq_; }
  void set_gptq_process(const GptqProcess& p) { gptq_ = p; }

 private:
  std::shared_ptr<kernels::IntNStorage> s_;
  torch::Tensor bias_;  // [out] f32 or undefined
  std::optional<GptqProcess> gptq_;
};

LinearFactory intn_linear_factory();

}  // namespace llmopt::model
