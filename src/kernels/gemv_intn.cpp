// Int-N / NF4 decode GEMV rows (see gemv_intn.h).
#include "kernels/gemv_intn.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "core/threads.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/gemv_intn.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace llmopt::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using DI = hn::RebindToSigned<DF>;
using DU8 = hn::Rebind<uint8_t, DF>;

// Σ_i (lo(c_i) − z)·xe_i + (hi(c_i) − z)·xo_i over n bytes of int4 codes (low nibble = element
// 2i). Four vector accumulators, then the lanes, then the tail bytes.
HWY_INLINE float Int4PairDot(const uint8_t* HWY_RESTRICT c, float z, const float* HWY_RESTRICT xe,
                             const float* HWY_RESTRICT xo, int64_t n) {
  const DF df;
  const DI di;
  const DU8 du8;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  const auto zv = hn::Set(df, z);
  const auto mask = hn::Set(di, 0x0f);
  auto a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
  int64_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    const auto b0 = hn::PromoteTo(di, hn::LoadU(du8, c + i));
    const auto b1 = hn::PromoteTo(di, hn::LoadU(du8, c + i + L));
    a0 = hn::MulAdd(hn::Sub(hn::ConvertTo(df, hn::And(b0, mask)), zv), hn::LoadU(df, xe + i), a0);
    a1 = hn::MulAdd(hn::Sub(hn::ConvertTo(df, hn::ShiftRight<4>(b0)), zv), hn::LoadU(df, xo + i), a1);
    a2 = hn::MulAdd(hn::Sub(hn::ConvertTo(df, hn::And(b1, mask)), zv), hn::LoadU(df, xe + i + L), a2);
    a3 = hn::MulAdd(hn::Sub(hn::ConvertTo(df, hn::ShiftRight<4>(b1)), zv), hn::LoadU(df, xo + i + L), a3);
  }
  for (; i + L <= n; i += L) {
    const auto b0 = hn::PromoteTo(di, hn::LoadU(du8, c + i));
    a0 = hn::MulAdd(hn::Sub(hn::ConvertTo(df, hn::And(b0, mask)), zv), hn::LoadU(df, xe + i), a0);
    a1 = hn::MulAdd(hn::Sub(hn::ConvertTo(df, hn::ShiftRight<4>(b0)), zv), hn::LoadU(df, xo + i), a1);
  }
  float s = hn::GetLane(hn::SumOfLanes(df, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
  for (; i < n; ++i) {
    s += (static_cast<float>(c[i] & 0x0f) - z) * xe[i];
    s += (static_cast<float>(c[i] >> 4) - z) * xo[i];
  }
  return s;
}

// Σ_j (c_j − z)·x_j over n byte codes (int8), four vector accumulators.
HWY_INLINE float Int8Dot(const uint8_t* HWY_RESTRICT c, float z, const float* HWY_RESTRICT x, int64_t n) {
  const DF df;
  const DI di;
  const DU8 du8;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  const auto zv = hn::Set(df, z);
  auto a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
  auto code = [&](int64_t j) { return hn::Sub(hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(du8, c + j))), zv); };
  int64_t j = 0;
  for (; j + 4 * L <= n; j += 4 * L) {
    a0 = hn::MulAdd(code(j), hn::LoadU(df, x + j), a0);
    a1 = hn::MulAdd(code(j + L), hn::LoadU(df, x + j + L), a1);
    a2 = hn::MulAdd(code(j + 2 * L), hn::LoadU(df, x + j + 2 * L), a2);
    a3 = hn::MulAdd(code(j + 3 * L), hn::LoadU(df, x + j + 3 * L), a3);
  }
  for (; j + L <= n; j += L) a0 = hn::MulAdd(code(j), hn::LoadU(df, x + j), a0);
  float s = hn::GetLane(hn::SumOfLanes(df, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
  for (; j < n; ++j) s += (static_cast<float>(c[j]) - z) * x[j];
  return s;
}

// The NF4 values of the codes in `q` (i32 lanes 0..15): one register table lookup with 16 lanes,
// two tables of 8 and a select with 8 lanes, a gather otherwise.
HWY_INLINE hn::Vec<DF> NF4Values(hn::Vec<DI> q) {
  const DF df;
  const DI di;
  const size_t L = hn::Lanes(df);
  if (L == 16) return hn::TableLookupLanes(hn::LoadU(df, kNF4Values), hn::IndicesFromVec(df, q));
  if (L == 8) {
    const auto idx = hn::IndicesFromVec(df, hn::And(q, hn::Set(di, 7)));
    const auto lo = hn::TableLookupLanes(hn::LoadU(df, kNF4Values), idx);
    const auto hi = hn::TableLookupLanes(hn::LoadU(df, kNF4Values + 8), idx);
    const auto upper = hn::RebindMask(df, q > hn::Set(di, 7));
    return hn::IfThenElse(upper, hi, lo);
  }
  return hn::GatherIndex(df, kNF4Values, q);
}

// Σ_i v(hi(c_i))·xe_i + v(lo(c_i))·xo_i over n bytes of NF4 codes (high nibble = element 2i).
HWY_INLINE float NF4PairDot(const uint8_t* HWY_RESTRICT c, const float* HWY_RESTRICT xe, const float* HWY_RESTRICT xo,
                            int64_t n) {
  const DF df;
  const DI di;
  const DU8 du8;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  const auto mask = hn::Set(di, 0x0f);
  auto a0 = hn::Zero(df), a1 = hn::Zero(df);
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const auto b = hn::PromoteTo(di, hn::LoadU(du8, c + i));
    a0 = hn::MulAdd(NF4Values(hn::ShiftRight<4>(b)), hn::LoadU(df, xe + i), a0);
    a1 = hn::MulAdd(NF4Values(hn::And(b, mask)), hn::LoadU(df, xo + i), a1);
  }
  float s = hn::GetLane(hn::SumOfLanes(df, hn::Add(a0, a1)));
  for (; i < n; ++i) {
    s += kNF4Values[c[i] >> 4] * xe[i];
    s += kNF4Values[c[i] & 0x0f] * xo[i];
  }
  return s;
}

// xe/xo (ceil(k/2) each) from x: the odd half's padding slot (odd k) is 0, so the padding code
// of a row's last byte adds nothing.
void SplitPairs(const float* x, int64_t k, float* xe, float* xo) {
  const int64_t h = k / 2;
  for (int64_t i = 0; i < h; ++i) {
    xe[i] = x[2 * i];
    xo[i] = x[2 * i + 1];
  }
  if (k & 1) xe[h] = x[k - 1], xo[h] = 0.0f;
}

thread_local std::vector<float> tl_pairs;

void IntNRows(const IntNMatrix& w, const float* x, const float* bias, float* y, int64_t r0, int64_t r1) {
  const int64_t k = w.cols, gs = w.group_size(), groups = w.groups();
  if (w.bits == 4) {
    const int64_t half = (k + 1) / 2;
    tl_pairs.resize(static_cast<size_t>(2 * half));
    float* xe = tl_pairs.data();
    float* xo = xe + half;
    SplitPairs(x, k, xe, xo);
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* c = w.codes + r * w.code_row_bytes();
      float s = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        const IntNGrid grid = w.grid(r, g);
        const int64_t b0 = g * gs / 2, b1 = g + 1 == groups ? half : (g + 1) * gs / 2;
        s += grid.scale * Int4PairDot(c + b0, grid.zero, xe + b0, xo + b0, b1 - b0);
      }
      y[r] = bias ? s + bias[r] : s;
    }
    return;
  }
  for (int64_t r = r0; r < r1; ++r) {  // 8 bits
    const uint8_t* c = w.codes + r * w.code_row_bytes();
    float s = 0.0f;
    for (int64_t g = 0; g < groups; ++g) {
      const IntNGrid grid = w.grid(r, g);
      const int64_t start = g * gs, n = std::min(gs, k - start);
      s += grid.scale * Int8Dot(c + start, grid.zero, x + start, n);
    }
    y[r] = bias ? s + bias[r] : s;
  }
}

void NF4Rows(const NF4Matrix& w, const float* x, const float* bias, float* y, int64_t r0, int64_t r1) {
  const int64_t k = w.cols, half = (k + 1) / 2, blocks = w.blocks_per_row();
  tl_pairs.resize(static_cast<size_t>(2 * half));
  float* xe = tl_pairs.data();
  float* xo = xe + half;
  SplitPairs(x, k, xe, xo);
  constexpr int64_t kBlockBytes = kNF4Block / 2;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* c = w.codes + r * w.code_row_bytes();
    float s = 0.0f;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t b0 = b * kBlockBytes, b1 = std::min(half, b0 + kBlockBytes);
      s += w.block_absmax(r, b) * NF4PairDot(c + b0, xe + b0, xo + b0, b1 - b0);
    }
    y[r] = bias ? s + bias[r] : s;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace llmopt::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmopt::kernels {
HWY_EXPORT(IntNRows);
HWY_EXPORT(NF4Rows);

bool intn_gemv_fast(const IntNMatrix& w) {
  if (w.g_idx != nullptr) return false;
  // int4 groups must start on a byte: an even group size, or one group per row.
  if (w.bits == 4) return w.groups() == 1 || w.group_size() % 2 == 0;
  return w.bits == 8;
}

void intn_gemv_rows(const IntNMatrix& w, const float* x, const float* bias, float* y, int64_t r0, int64_t r1) {
  if (r0 >= r1) return;
  if (intn_gemv_fast(w)) return HWY_DYNAMIC_DISPATCH(IntNRows)(w, x, bias, y, r0, r1);
  for (int64_t r = r0; r < r1; ++r) {
    const float d = intn_dot(w, r, x);
    y[r] = bias ? d + bias[r] : d;
  }
}

void intn_gemv_rows_ref(const IntNMatrix& w, const float* x, const float* bias, float* y, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float d = intn_dot_ref(w, r, x);
    y[r] = bias ? d + bias[r] : d;
  }
}

void nf4_gemv_rows(const NF4Matrix& w, const float* x, const float* bias, float* y, int64_t r0, int64_t r1) {
  if (r0 >= r1) return;
  HWY_DYNAMIC_DISPATCH(NF4Rows)(w, x, bias, y, r0, r1);
}

void nf4_gemv_rows_ref(const NF4Matrix& w, const float* x, const float* bias, float* y, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float d = nf4_dot_ref(w, r, x);
    y[r] = bias ? d + bias[r] : d;
  }
}

namespace {
constexpr int64_t kRowsPerBlock = 16;
constexpr int64_t kMinParallelWork = 1 << 15;

template <class Rows>
void over_threads(int64_t n, int64_t k, int num_threads, Rows&& rows) {
  const int threads = n * k < kMinParallelWork ? 1 : (num_threads > 0 ? num_threads : llmopt::threads());
  const int64_t blocks = (n + kRowsPerBlock - 1) / kRowsPerBlock;
  if (threads <= 1 || blocks <= 1) return rows(0, n);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t b = 0; b < blocks; ++b) rows(b * kRowsPerBlock, std::min(n, (b + 1) * kRowsPerBlock));
}
}  // namespace

void intn_gemv_decode(const IntNMatrix& w, const float* x, const float* bias, float* y, int num_threads) {
  over_threads(w.rows, w.cols, num_threads, [&](int64_t r0, int64_t r1) { intn_gemv_rows(w, x, bias, y, r0, r1); });
}

void nf4_gemv_decode(const NF4Matrix& w, const float* x, const float* bias, float* y, int num_threads) {
  over_threads(w.rows, w.cols, num_threads, [&](int64_t r0, int64_t r1) { nf4_gemv_rows(w, x, bias, y, r0, r1); });
}

void intn_dequantize_tile(const IntNMatrix& w, int64_t r0, int64_t r1, float* out) {
  const int64_t k = w.cols, groups = w.groups(), gs = w.group_size();
  thread_local std::vector<uint8_t> codes;
  thread_local std::vector<IntNGrid> grids;
  codes.resize(static_cast<size_t>(k));
  grids.resize(static_cast<size_t>(groups));
  for (int64_t r = r0; r < r1; ++r, out += k) {
    intn_unpack_codes(w.codes + r * w.code_row_bytes(), 0, k, w.bits, codes.data());
    for (int64_t g = 0; g < groups; ++g) grids[g] = w.grid(r, g);
    if (w.g_idx != nullptr) {
      for (int64_t j = 0; j < k; ++j) out[j] = dequantize_code(codes[j], grids[w.g_idx[j]]);
      continue;
    }
    for (int64_t g = 0; g < groups; ++g) {
      const IntNGrid gr = grids[g];
      for (int64_t j = g * gs; j < std::min(k, (g + 1) * gs); ++j) out[j] = dequantize_code(codes[j], gr);
    }
  }
}

void nf4_dequantize_tile(const NF4Matrix& w, int64_t r0, int64_t r1, float* out) {
  const int64_t k = w.cols;
  for (int64_t r = r0; r < r1; ++r, out += k) {
    const uint8_t* c = w.codes + r * w.code_row_bytes();
    for (int64_t b = 0; b < w.blocks_per_row(); ++b) {
      const float a = w.block_absmax(r, b);
      for (int64_t j = b * kNF4Block; j < std::min(k, (b + 1) * kNF4Block); ++j)
        out[j] = kNF4Values[(j & 1) ? (c[j / 2] & 0x0f) : (c[j / 2] >> 4)] * a;
    }
  }
}

}  // namespace llmopt::kernels
#endif  // HWY_ONCE
