#include "model/linear.h"

#include "core/error.h"
#include "model/fast_ops.h"

namespace llmopt::model {

DenseLinear::DenseLinear(torch::Tensor weight, torch::Tensor bias) {
  LLMOPT_ASSERT(weight.dim() == 2, "weight must be [out, in]");
  weight_ = register_parameter("weight", weight.to(torch::kFloat32).contiguous());
  if (bias.defined()) {
    LLMOPT_ASSERT(bias.dim() == 1 && bias.size(0) == weight.size(0), "bias must be [out]");
    bias_ = register_parameter("bias", bias.to(torch::kFloat32).contiguous());
  }
}

torch::Tensor DenseLinear::forward(const torch::Tensor& x) { return linear_f32(x, weight_, bias_); }

int64_t DenseLinear::storage_bytes() const {
  return weight_.numel() * 4 + (bias_.defined() ? bias_.numel() * 4 : 0);
}

}  // namespace llmopt::model
