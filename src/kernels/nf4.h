// NF4 weights (QLoRA's 4-bit NormalFloat, as bitsandbytes defines it): the 16 code values of
// bitsandbytes' `get_4bit_type("nf4")`, blocks of 64 consecutive weights, each scaled by the
// block's absmax: w = kNF4Values[code]·absmax. The storage of model::NF4Linear (QLoRA bases).
//
// Storage of a [rows, cols] matrix:
//   codes   [rows, (cols + 1) / 2] u8, two codes per byte, the FIRST element of a pair in the
//           HIGH nibble (bitsandbytes' packing); each row starts on a byte.
//   blocks  per row: ceil(cols / 64), the last one shorter when cols is not a multiple of 64 (a
//           tail block: bitsandbytes blocks the flattened tensor instead, which is the same
//           whenever cols is a multiple of 64).
//   absmax  plain: f32 [rows·blocks].
//           double quantization (bitsandbytes' compress_statistics): the absmax values minus
//           their mean (`offset`, f32) quantized to 8 bits in blocks of 256 absmax values with
//           one f32 scale each. Our 8-bit map is the SIMPLER documented one, not bitsandbytes'
//           dynamic (exponent) map: symmetric linear int8, c = round(v / s2), s2 = max|v| / 127,
//           decoded absmax = c·s2 + offset. Bits per weight: 4 + 8/64 + 32/(64·256) ≈ 4.127
//           (plain: 4.5).
#pragma once
#include <cstdint>
#include <vector>

namespace llmopt::kernels {

inline constexpr int64_t kNF4Block = 64;
inline constexpr int64_t kNF4DoubleQuantBlock = 256;
// bitsandbytes' NF4 code values, ascending (code 7 is exactly 0).
extern const float kNF4Values[16];

// The code whose value is nearest to t (t = w / absmax, in [-1, 1]); ties go to the upper code.
int nf4_code(float t);

struct NF4Matrix {
  int64_t rows = 0, cols = 0;
  const uint8_t* codes = nullptr;
  bool double_quant = false;
  const float* absmax = nullptr;         // plain
  const int8_t* absmax_codes = nullptr;  // double quant: rows·blocks
  const float* absmax_scales = nullptr;  // double quant: ceil(rows·blocks / 256)
  float absmax_offset = 0.0f;            // double quant

  int64_t blocks_per_row() const { return (cols + kNF4Block - 1) / kNF4Block; }
  int64_t code_row_bytes() const { return (cols + 1) / 2; }
  // The (decoded) absmax of block b of row r.
  float block_absmax(int64_t r, int64_t b) const;
  double bits_per_weight() const;
};

struct NF4Storage {
  int64_t rows = 0, cols = 0;
  bool double_quant = false;
  std::vector<uint8_t> codes;
  std::vector<float> absmax;         // plain
  std::vector<int8_t> absmax_codes;  // double quant
  std::vector<float> absmax_scales;  // double quant
  float absmax_offset = 0.0f;        // double quant
  NF4Matrix view() const;
};

// Quantizes w [rows, cols]: per block absmax (double-quantized when asked), then each weight to
// the code nearest to w / decoded absmax (clamped to ±1 when the decoded absmax is below |w|).
// InputError for non-finite weights or an empty shape.
NF4Storage nf4_quantize(const float* w, int64_t rows, int64_t cols, bool double_quant);
// InputError unless the buffers have the sizes the shape implies and absmax values are finite.
void nf4_check_storage(const NF4Storage& s, const char* where);

void nf4_dequantize_rows(const NF4Matrix& w, int64_t r0, int64_t r1, float* out);
// Σ_j W[r, j]·x[j]: per block absmax·Σ_j v(code_j)·x_j (Highway), fixed order per shape/target.
float nf4_dot(const NF4Matrix& w, int64_t r, const float* x);
float nf4_dot_ref(const NF4Matrix& w, int64_t r, const float* x);
// Y[m×rows] = X[m×cols]·Wᵀ + bias; as intn_gemv (thread-count invariant).
void nf4_gemv(const NF4Matrix& w, const float* x, const float* bias, float* y, int64_t m, int num_threads = 0);
void nf4_gemv_ref(const NF4Matrix& w, const float* x, const float* bias, float* y, int64_t m);

}  // namespace llmopt::kernels
