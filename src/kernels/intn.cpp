// Group-wise int-N weights (see intn.h). The SIMD kernel unpacks a row's codes to bytes once
// (8-bit codes are read in place), then per group widens the bytes to f32, subtracts the zero
// point and multiplies with x (Highway dynamic dispatch); the group's sum is scaled by its f16
// step into the row sum. Act-order rows (g_idx) are decoded to f32 first, then one dot product.
#include "kernels/intn.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/half.h"
#include "core/threads.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/intn.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace llmopt::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;

// Σ_j (c_j − z)·x_j over n byte codes: two vector accumulators, then the lanes, then the tail.
HWY_INLINE float CodeDot(const uint8_t* HWY_RESTRICT c, float z, const float* HWY_RESTRICT x, int64_t n) {
  const DF df;
  const hn::RebindToSigned<DF> di32;
  const hn::Rebind<uint8_t, DF> du8;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  const auto zv = hn::Set(df, z);
  auto acc0 = hn::Zero(df), acc1 = hn::Zero(df);
  int64_t j = 0;
  for (; j + 2 * L <= n; j += 2 * L) {
    const auto q0 = hn::Sub(hn::ConvertTo(df, hn::PromoteTo(di32, hn::LoadU(du8, c + j))), zv);
    const auto q1 = hn::Sub(hn::ConvertTo(df, hn::PromoteTo(di32, hn::LoadU(du8, c + j + L))), zv);
    acc0 = hn::MulAdd(q0, hn::LoadU(df, x + j), acc0);
    acc1 = hn::MulAdd(q1, hn::LoadU(df, x + j + L), acc1);
  }
  for (; j + L <= n; j += L) {
    const auto q0 = hn::Sub(hn::ConvertTo(df, hn::PromoteTo(di32, hn::LoadU(du8, c + j))), zv);
    acc0 = hn::MulAdd(q0, hn::LoadU(df, x + j), acc0);
  }
  float s = hn::GetLane(hn::SumOfLanes(df, hn::Add(acc0, acc1)));
  for (; j < n; ++j) s += (static_cast<float>(c[j]) - z) * x[j];
  return s;
}

// Σ_j a_j·x_j (f32), same structure.
HWY_INLINE float F32Dot(const float* HWY_RESTRICT a, const float* HWY_RESTRICT x, int64_t n) {
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

// out[i] = row r · x_i for the m rows of x (row stride cols). `codes_buf` holds cols bytes,
// `f32_buf` cols floats (act-order only).
void IntNRowDots(const IntNMatrix& w, int64_t r, const float* x, int64_t m, float* out, uint8_t* codes_buf,
                 float* f32_buf) {
  const int64_t k = w.cols;
  if (w.g_idx != nullptr) {
    intn_dequantize_rows(w, r, r + 1, f32_buf);
    for (int64_t i = 0; i < m; ++i) out[i] = F32Dot(f32_buf, x + i * k, k);
    return;
  }
  const uint8_t* row_codes = w.codes + r * w.code_row_bytes();
  const uint8_t* c = row_codes;
  if (w.bits != 8) {
    intn_unpack_codes(row_codes, 0, k, w.bits, codes_buf);
    c = codes_buf;
  }
  const int64_t gs = w.group_size(), groups = w.groups();
  for (int64_t i = 0; i < m; ++i) out[i] = 0.0f;
  for (int64_t g = 0; g < groups; ++g) {
    const IntNGrid grid = w.grid(r, g);
    const int64_t start = g * gs, n = std::min(gs, k - start);
    for (int64_t i = 0; i < m; ++i) out[i] += grid.scale * CodeDot(c + start, grid.zero, x + i * k + start, n);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace llmopt::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmopt::kernels {
HWY_EXPORT(IntNRowDots);

int64_t intn_groups(int64_t cols, int64_t group) {
  if (group <= 0 || group >= cols) return cols > 0 ? 1 : 0;
  return (cols + group - 1) / group;
}

void intn_check_bits(int bits, const char* where) {
  LLMOPT_CHECK_INPUT(bits >= 2 && bits <= 8, "[intn] {}: bits must be 2..8, got {}", where, bits);
}

void intn_pack_codes(const uint8_t* codes, int64_t n, int bits, uint8_t* out) {
  const int64_t bytes = intn_code_bytes(bits, n);
  if (bits == 8) {
    std::memcpy(out, codes, static_cast<size_t>(n));
    return;
  }
  std::memset(out, 0, static_cast<size_t>(bytes));
  for (int64_t j = 0; j < n; ++j) {
    const int64_t bit = j * bits;
    const uint32_t v = static_cast<uint32_t>(codes[j]) << (bit & 7);
    out[bit >> 3] |= static_cast<uint8_t>(v & 0xffu);
    if ((bit & 7) + bits > 8) out[(bit >> 3) + 1] |= static_cast<uint8_t>(v >> 8);
  }
}

namespace {
// Eight codes fill exactly B bytes: each group of eight is read as one little-endian word.
// Returns how many codes were unpacked (a multiple of 8).
template <int B>
int64_t unpack_octets(const uint8_t* p, int64_t n, uint8_t* codes) {
  constexpr uint64_t kMask = (1u << B) - 1u;
  int64_t j = 0;
  for (; j + 8 <= n; j += 8, p += B) {
    // Assembled from bytes in registers: a B-byte memcpy into a word followed by a word load
    // stalls on store forwarding (~20 ns per eight codes).
    uint64_t v = 0;
    for (int b = 0; b < B; ++b) v |= static_cast<uint64_t>(p[b]) << (8 * b);
    uint64_t out = 0;  // the eight codes as bytes, stored at once (byte stores alias everything)
    for (int t = 0; t < 8; ++t) out |= ((v >> (t * B)) & kMask) << (8 * t);
    std::memcpy(codes + j, &out, 8);
  }
  return j;
}
}  // namespace

void intn_unpack_codes(const uint8_t* packed, int64_t start, int64_t n, int bits, uint8_t* codes) {
  if (bits == 8) {
    std::memcpy(codes, packed + start, static_cast<size_t>(n));
    return;
  }
  int64_t j = 0;
  const uint32_t mask = (1u << bits) - 1u;
  if (bits == 4 && (start & 1) == 0) {
    const uint8_t* p = packed + start / 2;
    for (; j + 2 <= n; j += 2, ++p) {
      codes[j] = *p & 0x0f;
      codes[j + 1] = *p >> 4;
    }
  } else if ((start & 7) == 0) {
    const uint8_t* p = packed + start / 8 * bits;
    switch (bits) {
      case 2: j = unpack_octets<2>(p, n, codes); break;
      case 3: j = unpack_octets<3>(p, n, codes); break;
      case 4: j = unpack_octets<4>(p, n, codes); break;
      case 5: j = unpack_octets<5>(p, n, codes); break;
      case 6: j = unpack_octets<6>(p, n, codes); break;
      case 7: j = unpack_octets<7>(p, n, codes); break;
      default: break;
    }
  }
  for (; j < n; ++j) {
    const int64_t bit = (start + j) * bits;
    uint32_t v = packed[bit >> 3];
    if ((bit & 7) + bits > 8) v |= static_cast<uint32_t>(packed[(bit >> 3) + 1]) << 8;
    codes[j] = static_cast<uint8_t>((v >> (bit & 7)) & mask);
  }
}

uint16_t intn_scale_to_f16_up(float scale) {
  LLMOPT_CHECK_INPUT(std::isfinite(scale) && scale <= 65504.0f,
                     "[intn] group scale {} does not fit f16 (weights too large for int-N storage)", scale);
  if (!(scale > 0.0f)) return 0x0001;  // smallest subnormal
  uint16_t h = f32_to_f16(scale);
  if (h == 0) h = 0x0001;
  if (f16_to_f32(h) < scale) ++h;  // positive f16 bit patterns are ordered like their values
  return h;
}

int quantize_code(float w, const IntNGrid& grid, int bits) {
  const float q = std::round(w / grid.scale) + grid.zero;
  return static_cast<int>(std::clamp(q, 0.0f, static_cast<float>(intn_max_code(bits))));
}

namespace {

IntNGrid grid_for_range(float lo, float hi, int bits, bool sym) {
  const float maxq = static_cast<float>(intn_max_code(bits));
  IntNGrid g;
  if (sym) {
    const float absmax = std::max(std::fabs(lo), std::fabs(hi));
    g.zero = static_cast<float>(1 << (bits - 1));
    g.scale = absmax > 0.0f ? f16_to_f32(intn_scale_to_f16_up(2.0f * absmax / maxq)) : 1.0f;
    return g;
  }
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  if (hi - lo <= 0.0f) {
    g.scale = 1.0f;
    g.zero = 0.0f;
    return g;
  }
  g.scale = f16_to_f32(intn_scale_to_f16_up((hi - lo) / maxq));
  g.zero = std::clamp(std::round(-lo / g.scale), 0.0f, maxq);
  return g;
}

double weighted_error(const float* w, int64_t n, const float* importance, const IntNGrid& g, int bits) {
  double err = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    const double d = static_cast<double>(w[j]) - dequantize_code(quantize_code(w[j], g, bits), g);
    err += (importance ? static_cast<double>(importance[j]) : 1.0) * d * d;
  }
  return err;
}

}  // namespace

IntNGrid fit_group(const float* w, int64_t n, int bits, bool sym, const float* importance, bool clip_search) {
  float lo = 0.0f, hi = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    lo = std::min(lo, w[j]);
    hi = std::max(hi, w[j]);
  }
  IntNGrid best = grid_for_range(lo, hi, bits, sym);
  if (!clip_search) return best;
  double best_err = weighted_error(w, n, importance, best, bits);
  for (int step = 1; step <= 20; ++step) {
    const float p = 1.0f - 0.02f * static_cast<float>(step);
    const IntNGrid g = grid_for_range(lo * p, hi * p, bits, sym);
    const double err = weighted_error(w, n, importance, g, bits);
    if (err < best_err) {
      best_err = err;
      best = g;
    }
  }
  return best;
}

IntNGrid IntNMatrix::grid(int64_t r, int64_t g) const {
  IntNGrid grid;
  grid.scale = scales_f32 ? scales_f32[r * groups() + g] : f16_to_f32(scales[r * groups() + g]);
  if (sym) {
    grid.zero = static_cast<float>(1 << (bits - 1));
  } else {
    uint8_t z;
    intn_unpack_codes(zeros + r * zero_row_bytes(), g, 1, bits, &z);
    grid.zero = static_cast<float>(z);
  }
  return grid;
}

double IntNMatrix::bits_per_weight() const {
  if (rows == 0 || cols == 0) return 0.0;
  const double bytes = static_cast<double>(rows) *
                       static_cast<double>(code_row_bytes() + (scales_f32 ? 4 : 2) * groups() +
                                           (sym ? 0 : zero_row_bytes()));
  return 8.0 * bytes / (static_cast<double>(rows) * static_cast<double>(cols));
}

IntNMatrix IntNStorage::view() const {
  IntNMatrix m;
  m.bits = bits;
  m.rows = rows;
  m.cols = cols;
  m.group = group;
  m.sym = sym;
  m.codes = codes.data();
  m.scales = scales_f32.empty() ? scales.data() : nullptr;
  m.scales_f32 = scales_f32.empty() ? nullptr : scales_f32.data();
  m.zeros = sym ? nullptr : zeros.data();
  m.g_idx = g_idx.empty() ? nullptr : g_idx.data();
  return m;
}

namespace {

IntNStorage empty_storage(int64_t rows, int64_t cols, int bits, int64_t group, bool sym, bool f32_scales = false) {
  intn_check_bits(bits, "storage");
  LLMOPT_CHECK_INPUT(rows >= 0 && cols > 0, "[intn] matrix must have columns, got [{}, {}]", rows, cols);
  IntNStorage s;
  s.bits = bits;
  s.rows = rows;
  s.cols = cols;
  s.group = group <= 0 || group >= cols ? -1 : group;
  s.sym = sym;
  const int64_t groups = intn_groups(cols, group);
  s.codes.assign(static_cast<size_t>(rows * intn_code_bytes(bits, cols)), 0);
  if (f32_scales) {
    s.scales_f32.assign(static_cast<size_t>(rows * groups), 0.0f);
  } else {
    s.scales.assign(static_cast<size_t>(rows * groups), 0);
  }
  if (!sym) s.zeros.assign(static_cast<size_t>(rows * intn_code_bytes(bits, groups)), 0);
  return s;
}

void store_row(IntNStorage& s, int64_t r, const uint8_t* codes, const IntNGrid* grids, std::vector<uint8_t>& zbuf) {
  const IntNMatrix v = s.view();
  const int64_t groups = v.groups();
  intn_pack_codes(codes, s.cols, s.bits, s.codes.data() + r * v.code_row_bytes());
  for (int64_t g = 0; g < groups; ++g) {
    if (s.scales_f32.empty()) {
      s.scales[static_cast<size_t>(r * groups + g)] = f32_to_f16(grids[g].scale);
    } else {
      s.scales_f32[static_cast<size_t>(r * groups + g)] = grids[g].scale;
    }
    zbuf[static_cast<size_t>(g)] = static_cast<uint8_t>(grids[g].zero);
  }
  if (!s.sym) intn_pack_codes(zbuf.data(), groups, s.bits, s.zeros.data() + r * v.zero_row_bytes());
}

}  // namespace

IntNStorage intn_quantize(const float* w, int64_t rows, int64_t cols, int bits, int64_t group, bool sym,
                          const float* col_importance, bool clip_search) {
  IntNStorage s = empty_storage(rows, cols, bits, group, sym);
  const IntNMatrix v = s.view();
  const int64_t groups = v.groups(), gs = v.group_size();
  std::vector<uint8_t> codes(static_cast<size_t>(cols)), zbuf(static_cast<size_t>(groups));
  std::vector<IntNGrid> grids(static_cast<size_t>(groups));
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = w + r * cols;
    for (int64_t j = 0; j < cols; ++j)
      LLMOPT_CHECK_INPUT(std::isfinite(row[j]), "[intn] weight [{}, {}] is {}, cannot quantize", r, j, row[j]);
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t start = g * gs, n = std::min(gs, cols - start);
      grids[g] = fit_group(row + start, n, bits, sym, col_importance ? col_importance + start : nullptr, clip_search);
      for (int64_t j = start; j < start + n; ++j) codes[j] = static_cast<uint8_t>(quantize_code(row[j], grids[g], bits));
    }
    store_row(s, r, codes.data(), grids.data(), zbuf);
  }
  return s;
}

IntNStorage intn_from_codes(const uint8_t* codes, const IntNGrid* grids, int64_t rows, int64_t cols, int bits,
                            int64_t group, bool sym, const int32_t* g_idx, bool f32_scales) {
  IntNStorage s = empty_storage(rows, cols, bits, group, sym, f32_scales);
  const int64_t groups = s.view().groups();
  const int maxq = intn_max_code(bits);
  if (g_idx) {
    for (int64_t j = 0; j < cols; ++j)
      LLMOPT_CHECK_INPUT(g_idx[j] >= 0 && g_idx[j] < groups, "[intn] g_idx[{}] = {} is outside [0, {})", j, g_idx[j],
                         groups);
    s.g_idx.assign(g_idx, g_idx + cols);
  }
  std::vector<uint8_t> zbuf(static_cast<size_t>(groups));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j)
      LLMOPT_CHECK_INPUT(codes[r * cols + j] <= maxq, "[intn] code [{}, {}] = {} exceeds {} for {} bits", r, j,
                         codes[r * cols + j], maxq, bits);
    for (int64_t g = 0; g < groups; ++g) {
      const IntNGrid& gr = grids[r * groups + g];
      if (f32_scales) {
        LLMOPT_CHECK_INPUT(gr.scale > 0.0f && std::isfinite(gr.scale),
                           "[intn] row {} group {}: scale {} is not a positive finite value", r, g, gr.scale);
      } else {
        LLMOPT_CHECK_INPUT(gr.scale > 0.0f && f16_to_f32(f32_to_f16(gr.scale)) == gr.scale,
                           "[intn] row {} group {}: scale {} is not a positive f16 value", r, g, gr.scale);
      }
      const float want_zero = sym ? static_cast<float>(1 << (bits - 1)) : gr.zero;
      LLMOPT_CHECK_INPUT(gr.zero == want_zero && gr.zero >= 0.0f && gr.zero <= static_cast<float>(maxq) &&
                             gr.zero == std::round(gr.zero),
                         "[intn] row {} group {}: zero {} is not {}", r, g, gr.zero,
                         sym ? "2^(bits-1) (symmetric)" : "an integer code");
    }
    store_row(s, r, codes + r * cols, grids + r * groups, zbuf);
  }
  return s;
}

void intn_check_storage(const IntNStorage& s, const char* where) {
  intn_check_bits(s.bits, where);
  LLMOPT_CHECK_INPUT(s.rows >= 0 && s.cols > 0, "[intn] {}: bad shape [{}, {}]", where, s.rows, s.cols);
  const IntNMatrix v = s.view();
  LLMOPT_CHECK_INPUT(static_cast<int64_t>(s.codes.size()) == s.rows * v.code_row_bytes(),
                     "[intn] {}: codes hold {} bytes, [{}, {}] at {} bits needs {}", where, s.codes.size(), s.rows,
                     s.cols, s.bits, s.rows * v.code_row_bytes());
  if (!s.scales_f32.empty()) {
    LLMOPT_CHECK_INPUT(s.scales.empty() && static_cast<int64_t>(s.scales_f32.size()) == s.rows * v.groups(),
                       "[intn] {}: {} f32 scales (and {} f16), expected {}", where, s.scales_f32.size(), s.scales.size(),
                       s.rows * v.groups());
    for (float f : s.scales_f32)
      LLMOPT_CHECK_INPUT(f > 0.0f && std::isfinite(f), "[intn] {}: a scale is not a positive finite f32 ({})", where, f);
  } else {
    LLMOPT_CHECK_INPUT(static_cast<int64_t>(s.scales.size()) == s.rows * v.groups(),
                       "[intn] {}: {} scales, expected {}", where, s.scales.size(), s.rows * v.groups());
  }
  for (uint16_t h : s.scales)
    LLMOPT_CHECK_INPUT((h & 0x8000u) == 0 && (h & 0x7c00u) != 0x7c00u && h != 0,
                       "[intn] {}: a scale is not a positive finite f16 (bits 0x{:04x})", where, h);
  if (!s.sym)
    LLMOPT_CHECK_INPUT(static_cast<int64_t>(s.zeros.size()) == s.rows * v.zero_row_bytes(),
                       "[intn] {}: zeros hold {} bytes, expected {}", where, s.zeros.size(),
                       s.rows * v.zero_row_bytes());
  if (!s.g_idx.empty()) {
    LLMOPT_CHECK_INPUT(static_cast<int64_t>(s.g_idx.size()) == s.cols, "[intn] {}: g_idx has {} entries, expected {}",
                       where, s.g_idx.size(), s.cols);
    for (int32_t g : s.g_idx)
      LLMOPT_CHECK_INPUT(g >= 0 && g < v.groups(), "[intn] {}: g_idx entry {} outside [0, {})", where, g, v.groups());
  }
}

void intn_dequantize_rows(const IntNMatrix& w, int64_t r0, int64_t r1, float* out) {
  const int64_t k = w.cols, groups = w.groups();
  std::vector<uint8_t> codes(static_cast<size_t>(k));
  std::vector<IntNGrid> grids(static_cast<size_t>(groups));
  for (int64_t r = r0; r < r1; ++r, out += k) {
    intn_unpack_codes(w.codes + r * w.code_row_bytes(), 0, k, w.bits, codes.data());
    for (int64_t g = 0; g < groups; ++g) grids[g] = w.grid(r, g);
    for (int64_t j = 0; j < k; ++j) out[j] = dequantize_code(codes[j], grids[w.group_of(j)]);
  }
}

float intn_dot(const IntNMatrix& w, int64_t r, const float* x) {
  std::vector<uint8_t> codes(static_cast<size_t>(w.cols));
  std::vector<float> f32(w.g_idx ? static_cast<size_t>(w.cols) : 0);
  float out = 0.0f;
  HWY_DYNAMIC_DISPATCH(IntNRowDots)(w, r, x, 1, &out, codes.data(), f32.data());
  return out;
}

float intn_dot_ref(const IntNMatrix& w, int64_t r, const float* x) {
  const int64_t k = w.cols;
  std::vector<uint8_t> codes(static_cast<size_t>(k));
  intn_unpack_codes(w.codes + r * w.code_row_bytes(), 0, k, w.bits, codes.data());
  if (w.g_idx) {
    float s = 0.0f;
    for (int64_t j = 0; j < k; ++j) s += dequantize_code(codes[j], w.grid(r, w.g_idx[j])) * x[j];
    return s;
  }
  const int64_t gs = w.group_size();
  float s = 0.0f;
  for (int64_t g = 0; g < w.groups(); ++g) {
    const IntNGrid grid = w.grid(r, g);
    float gsum = 0.0f;
    for (int64_t j = g * gs; j < std::min(k, (g + 1) * gs); ++j) gsum += (static_cast<float>(codes[j]) - grid.zero) * x[j];
    s += grid.scale * gsum;
  }
  return s;
}

namespace {
constexpr int64_t kRowsPerBlock = 16;
constexpr int64_t kMinParallelWork = 1 << 15;
}  // namespace

void intn_gemv(const IntNMatrix& w, const float* x, const float* bias, float* y, int64_t m, int num_threads) {
  LLMOPT_CHECK_INPUT(m >= 1, "[intn] gemv needs at least one input row, got {}", m);
  const int64_t n = w.rows, k = w.cols;
  const int threads = m * n * k < kMinParallelWork ? 1 : (num_threads > 0 ? num_threads : llmopt::threads());
  const int64_t blocks = (n + kRowsPerBlock - 1) / kRowsPerBlock;
  auto rows = [&](int64_t r0, int64_t r1) {
    std::vector<uint8_t> codes(static_cast<size_t>(k));
    std::vector<float> f32(w.g_idx ? static_cast<size_t>(k) : 0);
    std::vector<float> dots(static_cast<size_t>(m));
    for (int64_t r = r0; r < r1; ++r) {
      HWY_DYNAMIC_DISPATCH(IntNRowDots)(w, r, x, m, dots.data(), codes.data(), f32.data());
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

void intn_gemv_ref(const IntNMatrix& w, const float* x, const float* bias, float* y, int64_t m) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t r = 0; r < w.rows; ++r) {
      const float d = intn_dot_ref(w, r, x + i * w.cols);
      y[i * w.rows + r] = bias ? d + bias[r] : d;
    }
}

}  // namespace llmopt::kernels
#endif  // HWY_ONCE
