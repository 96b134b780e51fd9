// Integer-dot kernels on ggml block-quantized weights with activations quantized on the fly to
// int8 (what llama.cpp does with q8_0 / q8_K activations): the fast decode GEMV and prefill GEMM
// of the native engine for Q8_0, Q4_0, Q4_K and Q6_K weights.
//
// Activations: each row of x is cut into blocks of 32 and quantized as q8_0 with an f32 step,
// d = max|x|/127, q = round-half-even(x / d) in [-127, 127] (ActBlock). One format serves every
// weight type: the K formats' sub-blocks are 32 (Q4_K) or 16 (Q6_K) wide, so a 32-block of x
// meets one Q4_K scale/min or two Q6_K scales and the integer sum of a block is exact.
//
// Per weight block j of 32 and activation block j: I_j = Σ_i c_i·q_i exactly in int32, where c_i
// are the weight's integer codes (Q4_0: nibble, with -8·Σq folded in as an integer; Q8_0: int8;
// Q4_K: nibble; Q6_K: (q - 32)·scale of its 16-wide sub-block), then
//   y = Σ_j fl(d_x·s_j)·I_j  −  Σ_j fl(d_x·m_j)·Σq_j      (m_j: Q4_K's dmin·min, else 0)
// with s_j the block's f32 step (Q4_0/Q8_0/Q6_K: d; Q4_K: d·scale, exact in f32).
//
// gemm_quant runs these sums as one fused multiply-add per block and output (in block order), so
// each output equals gemm_quant_ref's exactly, on every SIMD target and for every thread count.
// gemv_act_q8 (decode) splits a row over vector lanes and is within float reassociation of the
// same formula (dot_act_q8_ref) for Q8_0/Q4_0; for Q4_K/Q6_K it multiplies by the row's q8_K form
// (one step per 256, ActRow) and is within reassociation of dot_act_q8k_ref. Each output is
// computed by one thread in a fixed order: results do not depend on the thread count. On AVX2 / AVX-512 targets the integer sums are maddubs/madd on
// 256-bit vectors (hand-written for those Highway targets); other targets run a scalar loop.
#pragma once
#include <cstdint>
#include <vector>

#include "core/dtype.h"

namespace llmopt::kernels {

inline constexpr int kActBlock = 32;

// One activation block: step d, sum = Σ qs (exact in f32), 32 int8 codes.
struct ActBlock {
  float d;
  float sum;
  int8_t qs[kActBlock];
};
static_assert(sizeof(ActBlock) == 40);

// Blocks 2j and 2j+1 of a quantized row regrouped for the Q4_0 GEMV, which takes two weight blocks
// per 32-byte vector (low nibbles of both, then high nibbles of both): lo = elements 0..15 of
// each block, hi = elements 16..31, d and the -8·Σq offsets spread over each block's 4 i32 lanes.
struct alignas(32) ActPair {
  int8_t lo[32];
  int8_t hi[32];
  float d[8];
  int32_t off8[8];  // lane 0 of each half: 8·Σq of the block, other lanes 0
};
static_assert(sizeof(ActPair) == 128);

// One activation row as the decode kernels take it: the blocks, and their pairs (the second
// block of a last odd pair is zero).
//
// When k is a multiple of 256 the row is also quantized the way llama.cpp's q8_K is, one step
// per 256 (qk, dk, and the sums of each 32 in bsum), for the Q4_K / Q6_K GEMV: one step per
// weight super-block lets it sum the sub-blocks' scaled integer dots in int32 and take one float
// multiply-add per 256 weights. (The GEMM, where the float work is shared by 8 rows, keeps steps
// per 32.)
struct ActRow {
  std::vector<ActBlock> blocks;
  std::vector<ActPair> pairs;
  std::vector<int8_t> qk;
  std::vector<float> dk;
  std::vector<int32_t> bsum;
  int64_t k = 0;
  // x[k], k a multiple of 32: blocks by quantize_act, pairs regrouped from them, the q8_K form.
  void quantize(const float* x, int64_t k);
};

// Weight types with integer-dot kernels here (Q8_0, Q4_0, Q4_K, Q6_K).
bool act_q8_supports(DType w_type);

// x[k] (k a multiple of 32) → k/32 blocks. quantize_act equals quantize_act_ref exactly.
void quantize_act(const float* x, ActBlock* out, int64_t k);
void quantize_act_ref(const float* x, ActBlock* out, int64_t k);
// The values the blocks stand for: out[i] = qs[i]·d.
void dequantize_act(const ActBlock* in, float* out, int64_t k);

// One row of W (k = x.k weights of w_type) against a quantized activation row (Q4_K, Q6_K: its
// q8_K form, see dot_act_q8k_ref; the others: its blocks, see dot_act_q8_ref). Unchecked.
float dot_act_q8(DType w_type, const void* w_row, const ActRow& x);
// Scalar twin: the formula above, sequential over blocks with one fma per block.
float dot_act_q8_ref(DType w_type, const void* w_row, const ActBlock* x, int64_t k);
// What dot_act_q8 computes for Q4_K / Q6_K rows (against x's q8_K form): per super-block s,
// fl(d_x·d)·I_s − fl(d_x·dmin)·M_s with I_s = Σ_sub scale·Σ code·q and M_s = Σ_sub min·Σ q exact.
float dot_act_q8k_ref(DType w_type, const void* w_row, const ActRow& x);

// y[r] = dot_act_q8(row r) (+ bias[r]) for r in [r0, r1), on the calling thread. Unchecked.
void gemv_act_q8_rows(DType w_type, const void* w, const ActRow& x, const float* bias, float* y,
                      int64_t r0, int64_t r1);

// y[n] = W[n×k]·x[k] (+ bias): x quantized once, rows split over threads (each row computed by
// one thread, so the result does not depend on the thread count). num_threads <= 0: threads().
// InputError for an unsupported w_type or a k that is not a multiple of the weight's block.
void gemv_act_q8(DType w_type, const void* w, const float* x, const float* bias, float* y,
                 int64_t n, int64_t k, int num_threads = 0);

// Y[m×n] = X[m×k]·W[n×k]ᵀ (+ bias on every row), X f32 row-major (quantized here, once),
// W packed rows. Activation rows are interleaved in panels of 8 (4 bytes of each row per 32-byte
// vector), weight rows decoded once per call and taken 4 (AVX2) or 8 (AVX-512) at a time, threads
// split the weight rows in chunks of 32; each
// output is one fma per block in block order (bit-identical to gemm_quant_ref).
// w_repacked: W is in repack.h's row-interleaved form (Q4_0/Q4_K, n a multiple of 8); each
// chunk's rows are unpacked into ggml blocks first, so the result is the same.
void gemm_quant(DType w_type, const void* w, const float* x, const float* bias, float* y,
                int64_t m, int64_t n, int64_t k, int num_threads = 0, bool w_repacked = false);
// Scalar twin: quantize_act_ref of each row, then dot_act_q8_ref (+ bias).
void gemm_quant_ref(DType w_type, const void* w, const float* x, const float* bias, float* y,
                    int64_t m, int64_t n, int64_t k);

}  // namespace llmopt::kernels
