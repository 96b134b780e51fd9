// Reductions over f32 arrays. sum_f32 reads its input once with no other memory traffic, which
// makes it the plain read-bandwidth probe the GEMV benchmark compares against.
#pragma once
#include <cstdint>

namespace llmopt::kernels {

// Σ x[0..n) in f32 with 4 SIMD accumulators (fixed order for a given n and SIMD target).
float sum_f32(const float* x, int64_t n);
// Scalar twin: sequential sum.
float sum_f32_ref(const float* x, int64_t n);

}  // namespace llmopt::kernels
