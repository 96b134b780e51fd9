// Small vector primitives of a transformer step that torch would otherwise vectorize for us:
// dot products and axpy for attention, in-place softmax, SwiGLU, RMSNorm. Highway dynamic
// dispatch; results depend only on n and the SIMD target (never on threads). Each has a scalar
// twin `*_ref` (sequential sums, std::exp) that tests use as the oracle.
#pragma once
#include <cstdint>

namespace llmopt::kernels {

// Σ a[i]·b[i] with 4 SIMD accumulators.
float dot_f32(const float* a, const float* b, int64_t n);
float dot_f32_ref(const float* a, const float* b, int64_t n);

// y[i] += alpha · x[i].
void axpy_f32(float alpha, const float* x, float* y, int64_t n);
void axpy_f32_ref(float alpha, const float* x, float* y, int64_t n);

// x ← softmax(x) over n ≥ 1 elements (max subtracted first; -inf entries become 0).
void softmax_f32(float* x, int64_t n);
void softmax_f32_ref(float* x, int64_t n);

// g[i] ← silu(g[i]) · u[i] = g[i] / (1 + exp(-g[i])) · u[i]  (the SwiGLU of Llama's MLP).
void silu_mul_f32(float* g, const float* u, int64_t n);
void silu_mul_f32_ref(float* g, const float* u, int64_t n);

// out[i] = x[i] · rsqrt(mean(x²) + eps) · w[i]  (HF LlamaRMSNorm; mean of squares in f32).
void rms_norm_f32(const float* x, const float* w, float* out, int64_t n, float eps);
void rms_norm_f32_ref(const float* x, const float* w, float* out, int64_t n, float eps);

}  // namespace llmopt::kernels
