// Group-wise integer weights (int-N, N = 2..8), the storage of model::IntNLinear and of GPTQ
// checkpoints: each row of a [rows, cols] matrix is split into groups of `group` consecutive
// columns (the last group of a row may be shorter: the tail group), and every group has its own
// grid x = scale·(q − zero), q ∈ [0, 2^bits − 1]. int8 per output channel is bits 8 with one
// group per row.
//
// Storage (compact: bits + 16/group (+ bits/group when asymmetric) bits per weight):
//   codes   [rows, code_bytes(bits, cols)]  u8, the codes of a row as one bit stream, code j at
//           bits [j·bits, (j+1)·bits) counted from the least significant bit of byte 0 (for 4
//           bits: element 2i in the low nibble of byte i, as GPTQ packs 8 codes in an int32);
//           each row starts on a byte.
//   scales  [rows, groups]  f16 bits (the grid's scale is rounded to f16 before use, so encode
//           and decode agree exactly); or, instead (then `scales` is empty),
//   scales_f32 [rows, groups]  exact f32 scales, as GPTQ checkpoints saved from an f32 (or bf16)
//           model hold them: kept as they are rather than rounded to f16.
//   zeros   [rows, code_bytes(bits, groups)]  the integer zero points packed like codes;
//           absent when symmetric (zero = 2^(bits−1) as GPTQ's sym).
//   g_idx   [cols]  i32, optional (act-order, as GPTQ stores it): the group of each column;
//           without it column j belongs to group j / group.
// Decoded weights s·(q − z) are exact in f32 with f16 scales (11-bit significand × ≤ 9-bit
// integer); with f32 scales they are one f32 rounding of the exact product (auto-gptq's
// `scales * (weight - zeros)` in f32).
#pragma once
#include <cstdint>
#include <vector>

namespace llmopt::kernels {

// x = scale·(q − zero). `zero` is an integer in [0, 2^bits − 1] held as float; `scale` is an
// exact f16 value (> 0), or any positive finite f32 in storage with f32 scales.
struct IntNGrid {
  float scale = 1.0f;
  float zero = 0.0f;
};

inline int intn_max_code(int bits) { return (1 << bits) - 1; }
// Bytes of n codes of `bits` bits packed as one stream.
inline int64_t intn_code_bytes(int bits, int64_t n) { return (n * bits + 7) / 8; }
// Groups in a row of `cols` for group size `group` (<= 0 or >= cols: one group, the whole row).
int64_t intn_groups(int64_t cols, int64_t group);
// InputError unless 2 <= bits <= 8 (`where` names the option/layer in the message).
void intn_check_bits(int bits, const char* where);

// Packs n codes (each < 2^bits) into intn_code_bytes(bits, n) bytes at `out` (overwritten).
void intn_pack_codes(const uint8_t* codes, int64_t n, int bits, uint8_t* out);
// Codes [start, start + n) of a packed stream.
void intn_unpack_codes(const uint8_t* packed, int64_t start, int64_t n, int bits, uint8_t* codes);

// The grid of a group of n weights: sym — scale = 2·absmax / (2^bits − 1), zero = 2^(bits−1)
// (GPTQ's symmetric grid); asym — over [min(w, 0), max(w, 0)]: scale = (max − min)/(2^bits − 1),
// zero = round(−min/scale). The scale is rounded UP to the next f16 value, so with
// clip_search = false every w of the group is within scale/2 of the grid (round to nearest).
// `importance` (n values ≥ 0, or nullptr for all ones) weights the squared error that
// clip_search minimizes over shrunk ranges (absmax·p or [min·p, max·p], p = 1, 0.98 .. 0.60).
// An all-zero group gets scale 1 (codes decode to exactly 0). InputError if the scale would
// overflow f16.
IntNGrid fit_group(const float* w, int64_t n, int bits, bool sym, const float* importance = nullptr,
                   bool clip_search = false);
// clamp(round(w/scale) + zero, 0, 2^bits − 1): round to nearest (ties away from zero).
int quantize_code(float w, const IntNGrid& grid, int bits);
inline float dequantize_code(int q, const IntNGrid& grid) { return grid.scale * (static_cast<float>(q) - grid.zero); }
// `scale` rounded up to the next f16 value (f16 bits), at least the smallest f16 subnormal.
uint16_t intn_scale_to_f16_up(float scale);

// A read-only view of an int-N matrix as stored (see the top of this file).
struct IntNMatrix {
  int bits = 4;
  int64_t rows = 0, cols = 0;
  int64_t group = 128;  // <= 0 or >= cols: whole row
  bool sym = true;
  const uint8_t* codes = nullptr;
  const uint16_t* scales = nullptr;
  const float* scales_f32 = nullptr;  // when set: the scales, exact f32 (`scales` unused)
  const uint8_t* zeros = nullptr;    // asym only
  const int32_t* g_idx = nullptr;    // optional

  int64_t groups() const { return intn_groups(cols, group); }
  int64_t group_size() const { return group <= 0 || group >= cols ? cols : group; }
  int64_t code_row_bytes() const { return intn_code_bytes(bits, cols); }
  int64_t zero_row_bytes() const { return intn_code_bytes(bits, groups()); }
  int64_t group_of(int64_t col) const { return g_idx ? g_idx[col] : col / group_size(); }
  // The grid of group g of row r as stored.
  IntNGrid grid(int64_t r, int64_t g) const;
  // Bits per weight as stored: codes, scales and zeros (g_idx not counted: 32/rows bits).
  double bits_per_weight() const;
};

// Owned storage of an int-N matrix; view() over it.
struct IntNStorage {
  int bits = 4;
  int64_t rows = 0, cols = 0, group = 128;
  bool sym = true;
  std::vector<uint8_t> codes;
  std::vector<uint16_t> scales;
  std::vector<float> scales_f32;  // non-empty: f32 scales instead of `scales` (then empty)
  std::vector<uint8_t> zeros;
  std::vector<int32_t> g_idx;  // empty: contiguous groups
  IntNMatrix view() const;
};

// Round-to-nearest quantization of w [rows, cols] (row-major) with one fit_group per group.
// `col_importance` (cols values, or nullptr) are per-input-column weights of the squared error
// used by clip_search. InputError for bad bits, non-finite weights.
IntNStorage intn_quantize(const float* w, int64_t rows, int64_t cols, int bits, int64_t group, bool sym,
                          const float* col_importance = nullptr, bool clip_search = false);
// Builds storage from codes [rows, cols] (one code per byte) and grids [rows, groups] chosen by
// a caller (GPTQ, AWQ); g_idx (cols values) or nullptr. InputError for a code or zero out of range,
// a scale that is not a positive f16 value (`f32_scales`: not a positive finite f32, stored in
// scales_f32), a g_idx entry out of [0, groups).
IntNStorage intn_from_codes(const uint8_t* codes, const IntNGrid* grids, int64_t rows, int64_t cols, int bits,
                            int64_t group, bool sym, const int32_t* g_idx = nullptr, bool f32_scales = false);
// InputError unless the view's buffers have the sizes its shape implies (`where`: layer name).
void intn_check_storage(const IntNStorage& s, const char* where);

// Rows [r0, r1) decoded to f32 ((r1 − r0)·cols values).
void intn_dequantize_rows(const IntNMatrix& w, int64_t r0, int64_t r1, float* out);

// Σ_j W[r, j]·x[j] for row r: per group s·Σ_j (q_j − z)·x_j (Highway, fixed order for given
// shape and SIMD target). With g_idx: the row decoded to f32, then one f32 dot product.
float intn_dot(const IntNMatrix& w, int64_t r, const float* x);
// Scalar twin: the same formula summed sequentially.
float intn_dot_ref(const IntNMatrix& w, int64_t r, const float* x);
// Y[m×rows] = X[m×cols]·Wᵀ + bias (bias nullptr or rows values), 1 <= m: each W row is unpacked
// once for all m rows of X; rows split over OpenMP threads (num_threads <= 0: llmopt::threads()),
// each output reduced by one thread in a fixed order: bit-identical for every thread count.
void intn_gemv(const IntNMatrix& w, const float* x, const float* bias, float* y, int64_t m, int num_threads = 0);
void intn_gemv_ref(const IntNMatrix& w, const float* x, const float* bias, float* y, int64_t m);

}  // namespace llmopt::kernels
