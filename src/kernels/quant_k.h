// Internal to src/kernels: the search-based ggml quantizers behind quant_formats.h's traits table.
//  - reference quantizers of the K formats (ggml's quantize_row_q{2..6}_K_ref, q8_K_ref);
//  - importance-weighted quantizers (ggml's quantize_row_*_impl with quant_weights, the imatrix
//    path of llama-quantize) of Q4_0, Q4_1, Q5_0, Q5_1 and Q2_K..Q6_K.
// Callers go through quantize_row_ref / quantize_row_weighted, which check n; here n is a
// multiple of the block size and, for the weighted ones, exactly one row (the 32-element formats
// take their σ² over the whole row) and importance holds n non-negative values, never nullptr.
#pragma once
#include <cstdint>

namespace llmopt::kernels::detail {

void quantize_q2_k_ref(const float* x, void* dst, int64_t n);
void quantize_q3_k_ref(const float* x, void* dst, int64_t n);
void quantize_q4_k_ref(const float* x, void* dst, int64_t n);
void quantize_q5_k_ref(const float* x, void* dst, int64_t n);
void quantize_q6_k_ref(const float* x, void* dst, int64_t n);
void quantize_q8_k_ref(const float* x, void* dst, int64_t n);

void quantize_q4_0_weighted(const float* x, void* dst, int64_t n, const float* importance);
void quantize_q4_1_weighted(const float* x, void* dst, int64_t n, const float* importance);
void quantize_q5_0_weighted(const float* x, void* dst, int64_t n, const float* importance);
void quantize_q5_1_weighted(const float* x, void* dst, int64_t n, const float* importance);
void quantize_q2_k_weighted(const float* x, void* dst, int64_t n, const float* importance);
void quantize_q3_k_weighted(const float* x, void* dst, int64_t n, const float* importance);
void quantize_q4_k_weighted(const float* x, void* dst, int64_t n, const float* importance);
void quantize_q5_k_weighted(const float* x, void* dst, int64_t n, const float* importance);
void quantize_q6_k_weighted(const float* x, void* dst, int64_t n, const float* importance);

}  // namespace llmopt::kernels::detail
