// NF4 weights (see nf4.h). The SIMD kernel decodes a row's codes through the 16-value table
// into f32 once per row (for all m rows of x), then per block of 64 multiplies with x in
// vectors and scales the block's sum by its absmax (Highway dynamic dispatch).
#include "kernels/nf4.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/threads.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/nf4.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace llmopt::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;

HWY_INLINE float BlockDot(const float* HWY_RESTRICT a, const float* HWY_RESTRICT x, int64_t n) {
  const DF df;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  auto acc0 = hn::Zero(df), acc1 = hn::Zero(df);
  int64_t j = 0;
  for (; j + 2 * L <= n; j += 2 * L) {
    acc0 = hn::MulAdd(hn::LoadU(df, a + j), hn::LoadU(df, x + j), acc0);
    acc1 = hn::MulAdd(hn::LoadU(df, a + j + L), hn::LoadU(df, x + j + L), acc1);
  }
  for (; j + L <= n; j += L) acc0 = hn::MulAdd(hn::LoadU(df, a + j), hn::LoadU(df, x + j), acc0);
  float s = hn::GetLane(hn::SumOfLanes(df, hn::Add(acc0, acc1)));
  for (; j < n; ++j) s += a[j] * x[j];
  return s;
}

// out[i] = row r · x_i for the m rows of x; `values` holds cols floats (the row's code values).
void NF4RowDots(const NF4Matrix& w, int64_t r, const float* x, int64_t m, float* out, float* values) {
  const int64_t k = w.cols;
  const uint8_t* c = w.codes + r * w.code_row_bytes();
  // One table lookup per byte: the two values it holds (first element in the high nibble).
  static const auto pairs = [] {
    std::array<std::array<float, 2>, 256> t{};
    for (int b = 0; b < 256; ++b) t[b] = {kNF4Values[b >> 4], kNF4Values[b & 0x0f]};
    return t;
  }();
  for (int64_t j = 0; j + 1 < k; j += 2) std::memcpy(values + j, pairs[c[j / 2]].data(), 2 * sizeof(float));
  if (k & 1) values[k - 1] = kNF4Values[c[k / 2] >> 4];
  for (int64_t i = 0; i < m; ++i) out[i] = 0.0f;
  for (int64_t b = 0; b < w.blocks_per_row(); ++b) {
    const float a = w.block_absmax(r, b);
    const int64_t start = b * kNF4Block, n = std::min(kNF4Block, k - start);
    for (int64_t i = 0; i < m; ++i) out[i] += a * BlockDot(values + start, x + i * k + start, n);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace llmopt::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmopt::kernels {
HWY_EXPORT(NF4RowDots);

// bitsandbytes functional.py, get_4bit_type("nf4") (normalized quantiles of N(0, 1)).
const float kNF4Values[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

int nf4_code(float t) {
  // Midpoints between neighbouring values; the code is the number of midpoints at or below t.
  int code = 0;
  for (int c = 0; c < 15; ++c)
    if (t >= 0.5f * (kNF4Values[c] + kNF4Values[c + 1])) code = c + 1;
  return code;
}

float NF4Matrix::block_absmax(int64_t r, int64_t b) const {
  const int64_t i = r * blocks_per_row() + b;
  if (!double_quant) return absmax[i];
  return static_cast<float>(absmax_codes[i]) * absmax_scales[i / kNF4DoubleQuantBlock] + absmax_offset;
}

double NF4Matrix::bits_per_weight() const {
  if (rows == 0 || cols == 0) return 0.0;
  const double n_abs = static_cast<double>(rows * blocks_per_row());
  const double bytes = static_cast<double>(rows * code_row_bytes()) +
                       (double_quant ? n_abs + 4.0 * std::ceil(n_abs / kNF4DoubleQuantBlock) + 4.0 : 4.0 * n_abs);
  return 8.0 * bytes / (static_cast<double>(rows) * static_cast<double>(cols));
}

NF4Matrix NF4Storage::view() const {
  NF4Matrix m;
  m.rows = rows;
  m.cols = cols;
  m.codes = codes.data();
  m.double_quant = double_quant;
  m.absmax = double_quant ? nullptr : absmax.data();
  m.absmax_codes = double_quant ? absmax_codes.data() : nullptr;
  m.absmax_scales = double_quant ? absmax_scales.data() : nullptr;
  m.absmax_offset = absmax_offset;
  return m;
}

NF4Storage nf4_quantize(const float* w, int64_t rows, int64_t cols, bool double_quant) {
  LLMOPT_CHECK_INPUT(rows >= 0 && cols > 0, "[nf4] matrix must have columns, got [{}, {}]", rows, cols);
  NF4Storage s;
  s.rows = rows;
  s.cols = cols;
  s.double_quant = double_quant;
  const int64_t bpr = (cols + kNF4Block - 1) / kNF4Block, n_abs = rows * bpr;
  std::vector<float> absmax(static_cast<size_t>(n_abs));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < bpr; ++b) {
      float a = 0.0f;
      for (int64_t j = b * kNF4Block; j < std::min(cols, (b + 1) * kNF4Block); ++j) {
        const float v = w[r * cols + j];
        LLMOPT_CHECK_INPUT(std::isfinite(v), "[nf4] weight [{}, {}] is {}, cannot quantize", r, j, v);
        a = std::max(a, std::fabs(v));
      }
      absmax[r * bpr + b] = a;
    }
  if (double_quant) {
    double mean = 0.0;
    for (float a : absmax) mean += a;
    s.absmax_offset = n_abs > 0 ? static_cast<float>(mean / static_cast<double>(n_abs)) : 0.0f;
    const int64_t n_dq = (n_abs + kNF4DoubleQuantBlock - 1) / kNF4DoubleQuantBlock;
    s.absmax_codes.assign(static_cast<size_t>(n_abs), 0);
    s.absmax_scales.assign(static_cast<size_t>(n_dq), 0.0f);
    for (int64_t d = 0; d < n_dq; ++d) {
      const int64_t i0 = d * kNF4DoubleQuantBlock, i1 = std::min(n_abs, i0 + kNF4DoubleQuantBlock);
      float m = 0.0f;
      for (int64_t i = i0; i < i1; ++i) m = std::max(m, std::fabs(absmax[i] - s.absmax_offset));
      const float s2 = m > 0.0f ? m / 127.0f : 1.0f;
      s.absmax_scales[d] = s2;
      for (int64_t i = i0; i < i1; ++i)
        s.absmax_codes[i] = static_cast<int8_t>(std::clamp(std::round((absmax[i] - s.absmax_offset) / s2), -127.0f, 127.0f));
    }
  } else {
    s.absmax = absmax;
  }
  const NF4Matrix v = s.view();
  s.codes.assign(static_cast<size_t>(rows * v.code_row_bytes()), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) {
      const float a = v.block_absmax(r, j / kNF4Block);
      const float t = a > 0.0f ? std::clamp(w[r * cols + j] / a, -1.0f, 1.0f) : 0.0f;
      const auto code = static_cast<uint8_t>(nf4_code(t));
      uint8_t& byte = s.codes[static_cast<size_t>(r * v.code_row_bytes() + j / 2)];
      byte |= (j & 1) ? code : static_cast<uint8_t>(code << 4);
    }
  return s;
}

void nf4_check_storage(const NF4Storage& s, const char* where) {
  LLMOPT_CHECK_INPUT(s.rows >= 0 && s.cols > 0, "[nf4] {}: bad shape [{}, {}]", where, s.rows, s.cols);
  const NF4Matrix v = s.view();
  const int64_t n_abs = s.rows * v.blocks_per_row();
  LLMOPT_CHECK_INPUT(static_cast<int64_t>(s.codes.size()) == s.rows * v.code_row_bytes(),
                     "[nf4] {}: codes hold {} bytes, [{}, {}] needs {}", where, s.codes.size(), s.rows, s.cols,
                     s.rows * v.code_row_bytes());
  if (s.double_quant) {
    const int64_t n_dq = (n_abs + kNF4DoubleQuantBlock - 1) / kNF4DoubleQuantBlock;
    LLMOPT_CHECK_INPUT(static_cast<int64_t>(s.absmax_codes.size()) == n_abs &&
                           static_cast<int64_t>(s.absmax_scales.size()) == n_dq,
                       "[nf4] {}: double-quantized absmax needs {} codes and {} scales, got {} and {}", where, n_abs,
                       n_dq, s.absmax_codes.size(), s.absmax_scales.size());
    for (float f : s.absmax_scales)
      LLMOPT_CHECK_INPUT(std::isfinite(f), "[nf4] {}: non-finite absmax scale", where);
    LLMOPT_CHECK_INPUT(std::isfinite(s.absmax_offset), "[nf4] {}: non-finite absmax offset", where);
  } else {
    LLMOPT_CHECK_INPUT(static_cast<int64_t>(s.absmax.size()) == n_abs, "[nf4] {}: {} absmax values, expected {}",
                       where, s.absmax.size(), n_abs);
    for (float f : s.absmax) LLMOPT_CHECK_INPUT(std::isfinite(f), "[nf4] {}: non-finite absmax", where);
  }
}

void nf4_dequantize_rows(const NF4Matrix& w, int64_t r0, int64_t r1, float* out) {
  const int64_t k = w.cols;
  for (int64_t r = r0; r < r1; ++r, out += k) {
    const uint8_t* c = w.codes + r * w.code_row_bytes();
    for (int64_t j = 0; j < k; ++j) {
      const int code = (j & 1) ? (c[j / 2] & 0x0f) : (c[j / 2] >> 4);
      out[j] = kNF4Values[code] * w.block_absmax(r, j / kNF4Block);
    }
  }
}

float nf4_dot(const NF4Matrix& w, int64_t r, const float* x) {
  std::vector<float> values(static_cast<size_t>(w.cols));
  float out = 0.0f;
  HWY_DYNAMIC_DISPATCH(NF4RowDots)(w, r, x, 1, &out, values.data());
  return out;
}

float nf4_dot_ref(const NF4Matrix& w, int64_t r, const float* x) {
  const int64_t k = w.cols;
  const uint8_t* c = w.codes + r * w.code_row_bytes();
  float s = 0.0f;
  for (int64_t b = 0; b < w.blocks_per_row(); ++b) {
    float bsum = 0.0f;
    for (int64_t j = b * kNF4Block; j < std::min(k, (b + 1) * kNF4Block); ++j) {
      const int code = (j & 1) ? (c[j / 2] & 0x0f) : (c[j / 2] >> 4);
      bsum += kNF4Values[code] * x[j];
    }
    s += w.block_absmax(r, b) * bsum;
  }
  return s;
}

namespace {
constexpr int64_t kRowsPerBlock = 16;
constexpr int64_t kMinParallelWork = 1 << 15;
}  // namespace

void nf4_gemv(const NF4Matrix& w, const float* x, const float* bias, float* y, int64_t m, int num_threads) {
  LLMOPT_CHECK_INPUT(m >= 1, "[nf4] gemv needs at least one input row, got {}", m);
  const int64_t n = w.rows, k = w.cols;
  const int threads = m * n * k < kMinParallelWork ? 1 : (num_threads > 0 ? num_threads : llmopt::threads());
  const int64_t blocks = (n + kRowsPerBlock - 1) / kRowsPerBlock;
  auto rows = [&](int64_t r0, int64_t r1) {
    std::vector<float> values(static_cast<size_t>(k)), dots(static_cast<size_t>(m));
    for (int64_t r = r0; r < r1; ++r) {
      HWY_DYNAMIC_DISPATCH(NF4RowDots)(w, r, x, m, dots.data(), values.data());
      for (int64_t i = 0; i < m; ++i) y[i * n + r] = bias ? dots[i] + bias[r] : dots[i];
    }
  };
  if (threads <= 1 || blocks <= 1) {
    rows(0, n);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t b = 0; b < blocks; ++b) rows(b * kRowsPerBlock, std::min(n, (b + 1) * kRowsPerBlock));
}

void nf4_gemv_ref(const NF4Matrix& w, const float* x, const float* bias, float* y, int64_t m) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t r = 0; r < w.rows; ++r) {
      const float d = nf4_dot_ref(w, r, x + i * w.cols);
      y[i * w.rows + r] = bias ? d + bias[r] : d;
    }
}

}  // namespace llmopt::kernels
#endif  // HWY_ONCE
