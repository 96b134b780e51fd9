// ggml block quantization formats: packed block structs (byte layouts of ggml's ggml-common.h),
// dequantizers for all of them, reference quantizers that reproduce ggml's *_ref rounding bit for
// bit (so the files we write equal llama.cpp's), importance-weighted quantizers that reproduce
// llama-quantize with an imatrix, and one traits table that tests, loaders and the CLI loop over. Half-precision fields are IEEE binary16 bit patterns (core/half.h).
//
// Layout summary (QK = 32 elements per block, QK_K = 256 per super-block):
//   Q4_0 {d; qs[16]}          x = (q - 8)·d,  q = nibble; low nibbles are elements 0..15,
//                                              high nibbles elements 16..31
//   Q4_1 {d, m; qs[16]}       x = q·d + m
//   Q5_0 {d; qh[4]; qs[16]}   q = nibble | (bit j of qh as u32) << 4,  x = (q - 16)·d
//   Q5_1 {d, m; qh[4]; qs[16]} x = q·d + m
//   Q8_0 {d; qs[32] int8}     x = q·d
//   Q8_1 {d, s; qs[32] int8}  x = q·d   (s = d·Σq, used by dot products only)
//   Q2_K..Q6_K, Q8_K          super-blocks of 16 or 8 sub-blocks with quantized scales (see .cpp)
#pragma once
#include <cstdint>
#include <span>

#include "core/dtype.h"

namespace llmopt::kernels {

inline constexpr int kQK = 32;    // elements per block of the Q4_0..Q8_1 formats
inline constexpr int kQK_K = 256;  // elements per super-block of the K formats

#pragma pack(push, 1)
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK / 2];
};
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};
struct BlockQ8_1 {
  uint16_t d;
  uint16_t s;
  int8_t qs[kQK];
};
// 16 sub-blocks of 16: scales[i] = scale (low 4 bits) | min (high 4 bits);
// x = d·scale·q - dmin·min, q 2 bits.
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];
  uint8_t qs[kQK_K / 4];
  uint16_t d;
  uint16_t dmin;
};
// 16 sub-blocks of 16 with 6-bit signed scales (stored +32); q = 2 low bits | high bit from
// hmask; x = d·(scale - 32)·(q - 4).
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];
  uint8_t qs[kQK_K / 4];
  uint8_t scales[12];
  uint16_t d;
};
// 8 sub-blocks of 32 with 6-bit scales and mins packed in 12 bytes; x = d·scale·q - dmin·min.
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[kQK_K / 2];
};
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
// 16 sub-blocks of 16 with int8 scales; q 6 bits (4 in ql, 2 in qh); x = d·scale·(q - 32).
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};
// Intermediate format of ggml's K dot products: f32 scale, int8 quants, sums of 16.
struct BlockQ8_K {
  float d;
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];
};
#pragma pack(pop)

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);

// One row of the traits table. `dequantize` and `quantize_ref` take n elements (a multiple of
// block_elems; the table functions do not check, the dequantize_row/quantize_row_ref wrappers do).
// `quantize_weighted` takes one row and a non-null importance (see quantize_row_weighted).
struct QuantTraits {
  DType type;
  int64_t block_elems;
  int64_t block_bytes;
  void (*dequantize)(const void* src, float* dst, int64_t n);
  void (*quantize_ref)(const float* src, void* dst, int64_t n);  // nullptr: not available yet
  // nullptr: the format ignores importance (Q8_0, Q8_1, Q8_K: llama.cpp rounds them plainly).
  void (*quantize_weighted)(const float* src, void* dst, int64_t n, const float* importance);
};

// Every block-quantized DType, in DType order.
std::span<const QuantTraits> quant_traits_table();
// The row for t, or nullptr if t is not block-quantized.
const QuantTraits* find_quant_traits(DType t);

// dst[0..n) = decoded src. Accepts every block format plus F32, F16 and BF16.
// InputError if t is another type or n is not a multiple of the block size.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);
// Quantizes n floats into n / block_elems blocks exactly as ggml's quantize_row_*_ref.
// InputError if t has no reference quantizer (see has_quantize_ref) or n is not a multiple of
// the block size.
void quantize_row_ref(DType t, const float* src, void* dst, int64_t n);
bool has_quantize_ref(DType t);

// Importance-weighted quantization of ONE row of n values (n a multiple of the block size),
// producing the bytes of llama.cpp's quantize_<type> (llama-quantize --imatrix) given the same
// importance vector: importance[j] ≥ 0 is the weight of input column j, e.g. the mean squared
// activation E[a_j²] from calibration (llama.cpp's imatrix values divided by their call count).
// nullptr = llama.cpp without an imatrix, i.e. quantize_row_ref.
//
// Each block picks its scale (and offset) minimizing Σ_j w_j·(x_j - x̂_j)², searching a few
// dozen candidate steps around the range-derived one and refitting by weighted least squares,
// with
//     w_j = importance_j · sqrt(σ² + x_j²),
// σ² = Σx²/n over the row for Q4_0/Q4_1/Q5_0/Q5_1, Σx²/256 over the super-block for Q2_K and
// 2·Σx²/256 for Q3_K/Q4_K/Q5_K (the sqrt term keeps large weights from being rounded to zero
// where the importance alone is small); Q6_K uses w_j = importance_j itself. The K formats'
// sub-block scales and mins are then rounded by the same kind of search, each sub-block weighted
// by its Σw. Q8_0, Q8_1 and Q8_K ignore importance (as llama.cpp). The row matters: the 32-value
// formats take σ² over the whole row, so quantizing a row in pieces gives different bytes.
// InputError if t has no reference quantizer or n is not a multiple of the block size.
void quantize_row_weighted(DType t, const float* src, void* dst, int64_t n, const float* importance);
// True if importance changes t's quantization (a search-based weighted quantizer exists).
bool has_quantize_weighted(DType t);

}  // namespace llmopt::kernels
