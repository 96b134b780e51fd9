// Dot products and GEMV rows on ggml block-quantized weights (Q8_0, Q5_0, Q4_0) with f32
// activations: the quantized linear layer's decode path. Weights stay quantized in memory (1.06,
// 0.69 and 0.56 bytes per weight instead of 4), each block is expanded to f32 in registers,
// multiplied with x, and its partial sum scaled by the block's step d:
// Σ_b d_b · Σ_{j<32} q_bj · x_bj.
// Callers normally go through gemv() (gemv.h), which uses these for Q8_0, Q5_0 and Q4_0.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace llmopt::kernels {

// True for the block types these kernels handle.
bool gemv_quant_supports(DType w_type);

// Σ_i W[i]·x[i] for one row of k weights (k a multiple of 32) stored as k/32 blocks of w_type.
// The order is fixed for a given k and SIMD target. Unchecked: callers validate.
float dot_quant(DType w_type, const void* w_row, const float* x, int64_t k);
// Scalar twin: the same blockwise formula, sequential.
float dot_quant_ref(DType w_type, const void* w_row, const float* x, int64_t k);

// y[r] = dot_quant(row r) (+ bias[r]) for r in [r0, r1); rows are k/32 blocks apart.
void gemv_quant_rows(DType w_type, const void* w, const float* x, const float* bias, float* y,
                     int64_t r0, int64_t r1, int64_t k);

}  // namespace llmopt::kernels
