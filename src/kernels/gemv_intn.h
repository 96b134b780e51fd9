// Decode-speed GEMV rows over int-N (kernels/intn.h) and NF4 (kernels/nf4.h) weights as stored,
// with f32 activations: what the native engine's decode step (src/infer/decode_step.cpp) runs for
// IntNLinear / NF4Linear projections, one row range per thread.
//
// Fast paths (Highway dynamic dispatch) read the packed codes in place, no per-row unpacking:
//   int4 (contiguous groups of an even size, or one group per row) and NF4: x is split once per
//     call into its even and odd elements (xe[i] = x[2i], xo[i] = x[2i+1]); byte i of a row holds
//     the codes of elements 2i and 2i+1 (int4: low nibble first; NF4: high nibble first), so one
//     vector of bytes widens to two vectors of codes that multiply xe and xo lane by lane.
//     NF4 codes map to their 16 values by a register table lookup.
//   int8 (contiguous groups): the bytes widened to f32 in place.
// Every other case (2, 3, 5, 6, 7 bits; act-order g_idx) goes through kernels::intn_dot.
// Per group: s·Σ(q − z)·x (int-N) or absmax·Σ v(q)·x (NF4), the group sums added in order; the
// scalar twins (*_ref) sum the same formula sequentially (intn_dot_ref / nf4_dot_ref).
// Every row is computed by one thread from its own inputs only, so results do not depend on how
// rows are split over threads.
#pragma once
#include <cstdint>

#include "kernels/intn.h"
#include "kernels/nf4.h"

namespace llmopt::kernels {

// Whether intn_gemv_rows has a fast path for `w` (otherwise it is correct but per-row slow).
bool intn_gemv_fast(const IntNMatrix& w);

// y[r] = row r · x (+ bias[r]) for r in [r0, r1), on the calling thread; bias may be null.
void intn_gemv_rows(const IntNMatrix& w, const float* x, const float* bias, float* y, int64_t r0, int64_t r1);
void intn_gemv_rows_ref(const IntNMatrix& w, const float* x, const float* bias, float* y, int64_t r0, int64_t r1);
void nf4_gemv_rows(const NF4Matrix& w, const float* x, const float* bias, float* y, int64_t r0, int64_t r1);
void nf4_gemv_rows_ref(const NF4Matrix& w, const float* x, const float* bias, float* y, int64_t r0, int64_t r1);

// y = W·x (+ bias) for one input row, rows split over OpenMP threads (num_threads <= 0:
// llmopt::threads()): bit-identical for every thread count.
void intn_gemv_decode(const IntNMatrix& w, const float* x, const float* bias, float* y, int num_threads = 0);
void nf4_gemv_decode(const NF4Matrix& w, const float* x, const float* bias, float* y, int num_threads = 0);

// Rows [r0, r1) decoded to f32 ((r1 − r0)·cols values), one group's grid / block's absmax at a
// time (prefill dequantizes tiles with these before a GEMM). Equal to intn_dequantize_rows /
// nf4_dequantize_rows (each value is one exact product).
void intn_dequantize_tile(const IntNMatrix& w, int64_t r0, int64_t r1, float* out);
void nf4_dequantize_tile(const NF4Matrix& w, int64_t r0, int64_t r1, float* out);

}  // namespace llmopt::kernels
