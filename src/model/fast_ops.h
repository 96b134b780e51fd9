// Inference fast paths that bypass torch's generic kernels where they are slow on CPU.
#pragma once
#include <torch/torch.h>

namespace llmopt::model {

// y = x Wᵀ + b for x [..., in], W [out, in] f32. When x holds a few rows, lives on the CPU and no
// gradient is needed, this streams W once through the multithreaded GEMV kernel of src/kernels
// (torch::linear on one row reaches only a fraction of memory bandwidth); otherwise torch::linear.
torch::Tensor linear_f32(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);

}  // namespace llmopt::model
