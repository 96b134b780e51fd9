#include "model/linear.h"

#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "infer/llama_cpu.h"
#include "model/fast_ops.h"

namespace llmopt::model {
namespace {

// A float32 copy of `t` in memory that asks the kernel for transparent huge pages (2 MiB-aligned
// and madvise(MADV_HUGEPAGE), which matters where THP is in "madvise" mode): decode streams every
// weight once per token, and 4 KiB pages cost TLB misses and interrupt hardware prefetching.
// Zero-filled float32 [rows, cols] in huge-page-advised memory (no temporary copy).
constexpr size_t kHuge = size_t{2} << 20;

// infer::hugepage_alloc advises only whole 2 MiB pages: a partial last huge page would be backed
// by a full 2 MiB and waste up to 2 MiB of RSS per matrix (~140 MB on the 134M benchmark model).
using infer::hugepage_alloc;

torch::Tensor hugepage_zeros(int64_t rows, int64_t cols) {
  const size_t bytes = static_cast<size_t>(rows * cols) * sizeof(float);
  if (bytes < kHuge) return torch::zeros({rows, cols});
  void* p = hugepage_alloc(bytes);
  if (p == nullptr) return torch::zeros({rows, cols});
  std::memset(p, 0, bytes);
  return torch::from_blob(p, {rows, cols}, [](void* q) { std::free(q); }, torch::kFloat32);
}

torch::Tensor hugepage_copy(const torch::Tensor& t) {
  if (!t.device().is_cpu()) return t.to(torch::kFloat32).contiguous();
  auto src = t.to(torch::kFloat32).contiguous();
  const size_t bytes = static_cast<size_t>(src.numel()) * sizeof(float);
  if (bytes < kHuge) return src.clone();
  void* p = hugepage_alloc(bytes);
  if (p == nullptr) return src.clone();
  std::memcpy(p, src.data_ptr<float>(), bytes);
  return torch::from_blob(p, src.sizes(), [](void* q) { std::free(q); }, torch::kFloat32);
}

}  // namespace

DenseLinear::DenseLinear(torch::Tensor weight, torch::Tensor bias) {
  LLMOPT_ASSERT(weight.dim() == 2, "weight must be [out, in]");
  weight_ = register_parameter("weight", hugepage_copy(weight));
  if (bias.defined()) {
    LLMOPT_ASSERT(bias.dim() == 1 && bias.size(0) == weight.size(0), "bias must be [out]");
    bias_ = register_parameter("bias", bias.to(torch::kFloat32).contiguous());
  }
}

DenseLinear::DenseLinear(int64_t out_features, int64_t in_features, bool with_bias) {
  weight_ = register_parameter("weight", hugepage_zeros(out_features, in_features));
  if (with_bias) bias_ = register_parameter("bias", torch::zeros({out_features}));
}

torch::Tensor DenseLinear::forward(const torch::Tensor& x) { return linear_f32(x, weight_, bias_); }

int64_t DenseLinear::storage_bytes() const {
  return weight_.numel() * 4 + (bias_.defined() ? bias_.numel() * 4 : 0);
}

const void* DenseLinear::gemv_weights(DType* type) const {
  if (!weight_.device().is_cpu() || weight_.scalar_type() != torch::kFloat32 || !weight_.is_contiguous()) return nullptr;
  if (bias_.defined() && (!bias_.device().is_cpu() || bias_.scalar_type() != torch::kFloat32 || !bias_.is_contiguous()))
    return nullptr;
  *type = DType::F32;
  return weight_.data_ptr<float>();
}

}  // namespace llmopt::model
