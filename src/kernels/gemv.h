// Matrix-vector products for decode: y[n] = W[n×k]·x[k] (+ bias[n]) with W row-major and
// stored as F32, F16 or BF16 (converted on the fly, accumulated in f32) or as ggml blocks
// (Q8_0/Q4_0 with fused dot products, see gemv_quant.h; the other block formats by decoding 16
// rows at a time to f32 in cache, then the F32 kernel), and a small-batch form
// Y[m×n] = X[m×k]·Wᵀ (m ≤ kMaxGemvBatch) that streams W once for all m rows of X.
//
// Both are bound by the bandwidth of streaming W. Rows are split over OpenMP threads in
// contiguous slabs (static schedule). Each output element is reduced by one thread in an order
// that depends only on k and the SIMD target, so results are bit-identical for every thread count.
// `*_ref` are the scalar twins (sequential sums) used as test oracles.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace llmopt::kernels {

// Largest m accepted by gemv_batch.
inline constexpr int64_t kMaxGemvBatch = 8;

// True for the weight storage types gemv and gemv_batch accept (F32, F16, BF16, and every
// block type of quant_formats.h).
bool gemv_supports(DType w_type);

// y[n] = W[n×k]·x[k] + bias[n]. w: n*k elements of w_type (F32: float, F16/BF16: uint16_t bits,
// block types: n rows of k / block_elems blocks), x: k floats, bias: n floats or nullptr, y: n
// floats (must not alias x or w). num_threads <= 0 uses llmopt::threads(). Throws InputError for
// an unsupported w_type, negative sizes, or a k that is not a multiple of the block size.
void gemv(DType w_type, const void* w, const float* x, const float* bias, float* y, int64_t n,
          int64_t k, int num_threads = 0);

// Rows [r0, r1) of gemv, computed on the calling thread only: for callers that run their own
// parallel region (the fused decode step of src/model). Each y[r] is bit-identical to gemv's.
// Arguments are checked as in gemv; 0 <= r0 <= r1 <= n is the caller's responsibility.
void gemv_rows(DType w_type, const void* w, const float* x, const float* bias, float* y,
               int64_t r0, int64_t r1, int64_t k);

// Y[m×n] = X[m×k]·W[n×k]ᵀ + bias[n] (bias added to every row), 1 <= m <= kMaxGemvBatch.
// x and y are row-major with row strides k and n.
void gemv_batch(DType w_type, const void* w, const float* x, const float* bias, float* y,
                int64_t m, int64_t n, int64_t k, int num_threads = 0);

// Scalar twins: y[r] = bias[r] + Σ_{i<k} W[r,i]·x[i] with row r decoded to f32 first
// (dequantize_row), summed sequentially in f32: the ordinary matmul on the decoded weights.
void gemv_ref(DType w_type, const void* w, const float* x, const float* bias, float* y, int64_t n,
              int64_t k);
void gemv_batch_ref(DType w_type, const void* w, const float* x, const float* bias, float* y,
                    int64_t m, int64_t n, int64_t k);

}  // namespace llmopt::kernels
