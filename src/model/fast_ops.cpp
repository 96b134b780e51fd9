#include "model/fast_ops.h"

#include "kernels/gemv.h"

namespace llmopt::model {

torch::Tensor linear_f32(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  const int64_t k = w.size(1), n = w.size(0);
  const int64_t rows = x.numel() / k;
  const bool fast = x.device().is_cpu() && w.device().is_cpu() && x.scalar_type() == torch::kFloat32 &&
                    w.scalar_type() == torch::kFloat32 && w.is_contiguous() && rows >= 1 &&
                    rows <= kernels::kMaxGemvBatch && !(torch::GradMode::is_enabled() && (x.requires_grad() || w.requires_grad()));
  if (!fast) return b.defined() ? torch::linear(x, w, b) : torch::linear(x, w);
  auto xc = x.contiguous();
  auto out_shape = x.sizes().vec();
  out_shape.back() = n;
  auto y = torch::empty(out_shape, torch::kFloat32);
  torch::Tensor bc = b.defined() ? b.contiguous() : torch::Tensor();  // keeps the bias alive
  const float* bias = bc.defined() ? bc.data_ptr<float>() : nullptr;
  if (rows == 1) {
    kernels::gemv(DType::F32, w.data_ptr<float>(), xc.data_ptr<float>(), bias, y.data_ptr<float>(), n, k);
  } else {
    kernels::gemv_batch(DType::F32, w.data_ptr<float>(), xc.data_ptr<float>(), bias, y.data_ptr<float>(), rows, n, k);
  }
  return y;
}

}  // namespace llmopt::model
