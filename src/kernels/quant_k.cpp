// Search-based ggml quantizers (see quant_k.h): the K formats' reference quantizers and the
// importance-weighted ones. Written from the algorithm of ggml-quants.c; to produce the same bytes
// as llama.cpp every float expression keeps ggml's operand order and types (int codes converted to
// float at the same point, uint8/int8 stores that wrap where ggml's do), and rounding uses ggml's
// nearest_int (round half to even through the 1.5·2^23 trick). The project compiles in ISO C++
// mode, so GCC does not contract a·b + c into an FMA (ggml's baseline x86 build has no FMA either).
#include "kernels/quant_k.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/half.h"
#include "kernels/quant_formats.h"

namespace llmopt::kernels::detail {
namespace {

constexpr float kGroupMaxEps = 1e-15f;  // below this largest magnitude a group is all zero

// Round to nearest, ties to even: adding 1.5·2^23 leaves the integer in the low mantissa bits
// (valid for |v| < 2^22, which every caller's scaled values satisfy).
inline int nearest_int(float v) {
  const float t = v + 12582912.0f;
  int32_t bits;
  std::memcpy(&bits, &t, 4);
  return (bits & 0x007fffff) - 0x00400000;
}

inline int clamp_int(int v, int lo, int hi) { return std::max(lo, std::min(hi, v)); }

// Symmetric codes with a weighted least-squares scale (ggml's make_qx_quants, rmse_type 1):
// L[i] = l + nmax with l = round(x·iscale) in [-nmax, nmax), scale = Σw·x·l / Σw·l². Tries
// iscale = -(nmax + 0.1·is)/max for is = -9..9 (max the signed extreme) and keeps the codes of the
// largest (Σw·x·l)²/Σw·l², i.e. the smallest weighted error Σw·(x - scale·l)². Weights: qw, or x²
// when qw is null. Returns the scale.
float make_qx_quants(int n, int nmax, const float* x, int8_t* L, const float* qw) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    std::fill(L, L + n, int8_t{0});
    return 0.0f;
  }
  auto weight = [&](int i) { return qw ? qw[i] : x[i] * x[i]; };
  float iscale = static_cast<float>(-nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = weight(i), lf = static_cast<float>(l);
    sumlx += w * x[i] * lf;
    suml2 += w * lf * lf;
  }
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is)) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
      const float w = weight(i), lf = static_cast<float>(l);
      sumlx += w * x[i] * lf;
      suml2 += w * lf * lf;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i)
        L[i] = static_cast<int8_t>(nmax + clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Q3_K's reference search (ggml's make_q3_quants with do_rmse): start from iscale = -nmax/max,
// then up to 5 passes of coordinate descent moving one code at a time to its best value given
// the others (weights x²), accepted when (Σw·x·l)²/Σw·l² grows. L[i] = l + nmax.
float make_q3_quants(int n, int nmax, const float* x, int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    std::fill(L, L + n, int8_t{0});
    return 0.0f;
  }
  const float iscale = static_cast<float>(-nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l);
    const float w = x[i] * x[i], lf = static_cast<float>(l);
    sumlx += w * x[i] * lf;
    suml2 += w * lf * lf;
  }
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * static_cast<float>(L[i]);
      if (slx > 0) {
        float sl2 = suml2 - w * static_cast<float>(L[i]) * static_cast<float>(L[i]);
        const int new_l = clamp_int(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
        if (new_l != L[i]) {
          const float nl = static_cast<float>(new_l);
          slx += w * x[i] * nl;
          sl2 += w * nl * nl;
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<int8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (changed == 0) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
  return sumlx / suml2;
}

// Affine codes x ≈ scale·L - the_min with L in [0, nmax] (ggml's make_qkx2_quants and
// make_qkx3_quants, which differ only in defaults every caller here overrides). The range
// [min(0, min x), max x] gives the first codes; then for nstep + 1 candidate steps
// iscale = (nmax + rmin + rdelta·is)/(max - min) the codes are rounded and scale and offset
// solved by weighted least squares (the offset clamped to ≤ 0); the candidate with the smallest
// Σw·|err| (use_mad) or Σw·err² wins. Returns the scale; *the_min = -offset ≥ 0.
float make_qkx_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                      float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                      bool use_mad) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    std::fill(L, L + n, uint8_t{0});
    *the_min = -min;
    return 0.0f;
  }
  auto error_of = [&](float diff) { return use_mad ? std::fabs(diff) : diff * diff; };
  float iscale = static_cast<float>(nmax) / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = static_cast<uint8_t>(clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax));
    best_error += weights[i] * error_of(scale * static_cast<float>(L[i]) + min - x[i]);
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax)) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax);
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i], lf = static_cast<float>(l);
      sum_l += w * lf;
      sum_l2 += w * lf * lf;
      sum_xl += w * lf * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i)
        cur_error += weights[i] * error_of(this_scale * static_cast<float>(Laux[i]) + this_min - x[i]);
      if (cur_error < best_error) {
        std::copy(Laux, Laux + n, L);
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// Non-negative codes L in [0, nmax] for the K formats' sub-block scales and mins (ggml's
// make_qp_quants): iscale = (nmax + 0.1·is)/max for is = -4..4 by weighted error, then up to 5
// coordinate-descent passes. L is uint8 and, as in ggml, a negative rounding wraps (inputs here
// are ≥ 0 in practice).
float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* qw) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
  if (max == 0) {
    std::fill(L, L + n, uint8_t{0});
    return 0.0f;
  }
  float iscale = static_cast<float>(nmax) / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nearest_int(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * static_cast<float>(L[i]);
    best_mse += qw[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * static_cast<float>(is) + static_cast<float>(nmax)) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, nearest_int(iscale_is * x[i]));
      const float diff = x[i] - scale_is * static_cast<float>(l);
      mse += qw[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, nearest_int(iscale * x[i]));
    L[i] = static_cast<uint8_t>(l);
    const float lf = static_cast<float>(l);
    sumlx += qw[i] * x[i] * lf;
    suml2 += qw[i] * lf * lf;
  }
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = qw[i], li = static_cast<float>(L[i]);
      float slx = sumlx - w * x[i] * li;
      float sl2 = suml2 - w * li * li;
      if (slx > 0 && sl2 > 0) {
        const int new_l = std::min(nmax, nearest_int(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          const float nl = static_cast<float>(new_l);
          slx += w * x[i] * nl;
          sl2 += w * nl * nl;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (changed == 0) break;
  }
  return sumlx / suml2;
}

// ---- shared tails: requantize every element with the stored (f16) scales, then pack ----------

// 2-bit codes of 4 consecutive 32-element runs share a byte (Q2_K qs, Q3_K low bits).
void pack_2bit(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQK_K; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                            (L[j + l + 96] << 6));
}

void q2_k_finish(const float* x, BlockQ2_K& b, uint8_t* L) {
  const float dm = f16_to_f32(b.d), mm = f16_to_f32(b.dmin);
  for (int j = 0; j < kQK_K / 16; ++j) {
    const float d = dm * static_cast<float>(b.scales[j] & 0x0f);
    if (d == 0) continue;
    const float m = mm * static_cast<float>(b.scales[j] >> 4);
    for (int ii = 0; ii < 16; ++ii)
      L[16 * j + ii] = static_cast<uint8_t>(clamp_int(nearest_int((x[16 * j + ii] + m) / d), 0, 3));
  }
  pack_2bit(L, b.qs);
}

// Q3_K scale l in [0, 63] (the signed scale + 32) of sub-block j into the 12 scale bytes; the
// bytes must start zeroed.
void q3_k_put_scale(uint8_t scales[12], int j, int l) {
  if (j < 8)
    scales[j] = static_cast<uint8_t>(l & 0x0f);
  else
    scales[j - 8] = static_cast<uint8_t>(scales[j - 8] | ((l & 0x0f) << 4));
  l >>= 4;
  scales[j % 4 + 8] = static_cast<uint8_t>(scales[j % 4 + 8] | (l << (2 * (j / 4))));
}

int q3_k_get_scale(const uint8_t scales[12], int j) {
  const int low = j < 8 ? (scales[j] & 0x0f) : (scales[j - 8] >> 4);
  return (low | (((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
}

// L holds codes 0..7 (the signed code + 4); the 3rd bit goes to hmask, bit m / 32 of hmask[m % 32].
void q3_k_finish(const float* x, BlockQ3_K& b, int8_t* L) {
  const float d_all = f16_to_f32(b.d);
  for (int j = 0; j < kQK_K / 16; ++j) {
    const float d = d_all * static_cast<float>(q3_k_get_scale(b.scales, j));
    if (d == 0) continue;
    for (int ii = 0; ii < 16; ++ii)
      L[16 * j + ii] = static_cast<int8_t>(clamp_int(nearest_int(x[16 * j + ii] / d), -4, 3) + 4);
  }
  std::memset(b.hmask, 0, sizeof b.hmask);
  uint8_t low[kQK_K];
  for (int j = 0; j < kQK_K; ++j) {
    int l = L[j];
    if (l > 3) {
      b.hmask[j % 32] = static_cast<uint8_t>(b.hmask[j % 32] | (1u << (j / 32)));
      l -= 4;
    }
    low[j] = static_cast<uint8_t>(l);
  }
  pack_2bit(low, b.qs);
}

// Q4_K/Q5_K: 6-bit scale ls and min lm of sub-block j into the 12 bytes, j in increasing order
// (j >= 4 adds the top bits to bytes j - 4 and j written by j - 4).
void k4_put_scale_min(uint8_t q[12], int j, uint8_t ls, uint8_t lm) {
  if (j < 4) {
    q[j] = ls;
    q[j + 4] = lm;
  } else {
    q[j + 4] = static_cast<uint8_t>((ls & 0x0f) | ((lm & 0x0f) << 4));
    q[j - 4] = static_cast<uint8_t>(q[j - 4] | ((ls >> 4) << 6));
    q[j] = static_cast<uint8_t>(q[j] | ((lm >> 4) << 6));
  }
}

void k4_get_scale_min(const uint8_t q[12], int j, uint8_t& d, uint8_t& m) {
  if (j < 4) {
    d = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    d = static_cast<uint8_t>((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
    m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Requantizes the 8 sub-blocks of 32 with the stored d·scale and dmin·min, codes 0..nmax.
void k4_requantize(const float* x, uint16_t d16, uint16_t dmin16, const uint8_t scales[12], int nmax,
                   uint8_t* L) {
  for (int j = 0; j < kQK_K / 32; ++j) {
    uint8_t sc, m;
    k4_get_scale_min(scales, j, sc, m);
    const float d = f16_to_f32(d16) * static_cast<float>(sc);
    if (d == 0) continue;
    const float dm = f16_to_f32(dmin16) * static_cast<float>(m);
    for (int ii = 0; ii < 32; ++ii)
      L[32 * j + ii] = static_cast<uint8_t>(clamp_int(nearest_int((x[32 * j + ii] + dm) / d), 0, nmax));
  }
}

void q4_k_finish(const float* x, BlockQ4_K& b, uint8_t* L) {
  k4_requantize(x, b.d, b.dmin, b.scales, 15, L);
  uint8_t* q = b.qs;
  for (int j = 0; j < kQK_K; j += 64, q += 32)
    for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
}

void q5_k_finish(const float* x, BlockQ5_K& b, uint8_t* L) {
  k4_requantize(x, b.d, b.dmin, b.scales, 31, L);
  std::memset(b.qh, 0, sizeof b.qh);
  uint8_t* ql = b.qs;
  uint8_t m1 = 1, m2 = 2;
  for (int n = 0; n < kQK_K; n += 64, ql += 32) {
    for (int j = 0; j < 32; ++j) {
      int l1 = L[n + j], l2 = L[n + j + 32];
      if (l1 > 15) {
        l1 -= 16;
        b.qh[j] = static_cast<uint8_t>(b.qh[j] | m1);
      }
      if (l2 > 15) {
        l2 -= 16;
        b.qh[j] = static_cast<uint8_t>(b.qh[j] | m2);
      }
      ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
    }
    m1 = static_cast<uint8_t>(m1 << 2);
    m2 = static_cast<uint8_t>(m2 << 2);
  }
}

// ---- reference quantizers ------------------------------------------------------------------

// Q4_K/Q5_K reference: per sub-block of 32 the affine search with weights av_x + |x| (av_x the
// sub-block's RMS), then scales and mins rounded to 6 bits against their maxima.
template <class Block>
void k4_ref(const float* x, Block* y, int64_t n, int nmax, float rmin, float rdelta, int nstep,
            void (*finish)(const float*, Block&, uint8_t*)) {
  uint8_t L[kQK_K], Laux[32];
  float weights[32], mins[kQK_K / 32], scales[kQK_K / 32];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < kQK_K / 32; ++j) {
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
      const float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
      scales[j] = make_qkx_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin,
                                  rdelta, nstep, false);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < kQK_K / 32; ++j) {
      const auto ls = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_scale * scales[j])));
      const auto lm = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_min * mins[j])));
      k4_put_scale_min(y[i].scales, j, ls, lm);
    }
    y[i].d = f32_to_f16(max_scale / 63.f);
    y[i].dmin = f32_to_f16(max_min / 63.f);
    finish(x, y[i], L);
  }
}

// Q6_K: symmetric search per sub-block of 16 (weights x² or the importance), int8 sub-block
// scales against the extreme one (-128 / max_scale), then requantize with d·scale.
void q6_k(const float* x, BlockQ6_K* y, int64_t n, const float* importance) {
  int8_t L[kQK_K];
  float scales[kQK_K / 16];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < kQK_K / 16; ++ib) {
      const float* qw = importance ? importance + kQK_K * i + 16 * ib : nullptr;
      const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, qw);
      scales[ib] = scale;
      if (std::fabs(scale) > max_abs_scale) {
        max_abs_scale = std::fabs(scale);
        max_scale = scale;
      }
    }
    if (max_abs_scale < kGroupMaxEps) {
      std::memset(&y[i], 0, sizeof(BlockQ6_K));
      continue;
    }
    const float iscale = -128.f / max_scale;
    y[i].d = f32_to_f16(1 / iscale);
    for (int ib = 0; ib < kQK_K / 16; ++ib)
      y[i].scales[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
    for (int j = 0; j < kQK_K / 16; ++j) {
      const float d = f16_to_f32(y[i].d) * static_cast<float>(y[i].scales[j]);
      if (d == 0) continue;
      for (int ii = 0; ii < 16; ++ii)
        L[16 * j + ii] = static_cast<int8_t>(clamp_int(nearest_int(x[16 * j + ii] / d), -32, 31) + 32);
    }
    uint8_t* ql = y[i].ql;
    uint8_t* qh = y[i].qh;
    for (int j = 0; j < kQK_K; j += 128, ql += 64, qh += 32) {
      for (int l = 0; l < 32; ++l) {
        const int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
        ql[l] = static_cast<uint8_t>((q1 & 0x0f) | ((q3 & 0x0f) << 4));
        ql[l + 32] = static_cast<uint8_t>((q2 & 0x0f) | ((q4 & 0x0f) << 4));
        qh[l] = static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
      }
    }
  }
}

// Σx² of count values, accumulated in order (as ggml).
float sum_squares(const float* x, int64_t count) {
  float s = 0;
  for (int64_t j = 0; j < count; ++j) s += x[j] * x[j];
  return s;
}

// The imatrix weights of llama.cpp: w_j = importance_j · sqrt(σ² + x_j²).
void imatrix_weights(const float* x, const float* importance, float sigma2, int count, float* w) {
  for (int j = 0; j < count; ++j) w[j] = importance[j] * std::sqrt(sigma2 + x[j] * x[j]);
}

float sum_of(const float* w, int count) {
  float s = 0;
  for (int j = 0; j < count; ++j) s += w[j];
  return s;
}

// Q4_K/Q5_K weighted: σ² = 2·Σx²/256 over the super-block, the affine search per sub-block with
// the imatrix weights, and the sub-block scales and mins rounded by make_qp_quants weighted by
// each sub-block's Σw.
template <class Block>
void k4_weighted(const float* x, Block* y, int64_t n, const float* importance, int nmax,
                 void (*finish)(const float*, Block&, uint8_t*)) {
  uint8_t L[kQK_K], Laux[32], Ls[kQK_K / 32], Lm[kQK_K / 32];
  float weights[32], sw[kQK_K / 32], mins[kQK_K / 32], scales[kQK_K / 32];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    const float sigma2 = 2 * sum_squares(x, kQK_K) / kQK_K;
    for (int j = 0; j < kQK_K / 32; ++j) {
      imatrix_weights(x + 32 * j, importance + kQK_K * i + 32 * j, sigma2, 32, weights);
      sw[j] = sum_of(weights, 32);
      scales[j] = make_qkx_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f,
                                  0.05f, 36, false);
    }
    const float d_block = make_qp_quants(kQK_K / 32, 63, scales, Ls, sw);
    const float m_block = make_qp_quants(kQK_K / 32, 63, mins, Lm, sw);
    for (int j = 0; j < kQK_K / 32; ++j)
      k4_put_scale_min(y[i].scales, j, std::min<uint8_t>(63, Ls[j]), std::min<uint8_t>(63, Lm[j]));
    y[i].d = f32_to_f16(d_block);
    y[i].dmin = f32_to_f16(m_block);
    finish(x, y[i], L);
  }
}

}  // namespace

// Q2_K reference: affine search per sub-block of 16 (weights |x|, mean absolute error), then
// 4-bit sub-block scales and mins against their maxima (/15).
void quantize_q2_k_ref(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ2_K*>(dst);
  uint8_t L[kQK_K], Laux[16];
  float weights[16], mins[kQK_K / 16], scales[kQK_K / 16];
  const float q4scale = 15.f;
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < kQK_K / 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] = make_qkx_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f,
                                  0.1f, 15, true);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
      const float iscale = q4scale / max_scale;
      for (int j = 0; j < kQK_K / 16; ++j)
        y[i].scales[j] = static_cast<uint8_t>(nearest_int(iscale * scales[j]));
      y[i].d = f32_to_f16(max_scale / q4scale);
    } else {
      std::memset(y[i].scales, 0, sizeof y[i].scales);
      y[i].d = f32_to_f16(0.f);
    }
    if (max_min > 0) {
      const float iscale = q4scale / max_min;
      for (int j = 0; j < kQK_K / 16; ++j)
        y[i].scales[j] = static_cast<uint8_t>(y[i].scales[j] | (nearest_int(iscale * mins[j]) << 4));
      y[i].dmin = f32_to_f16(max_min / q4scale);
    } else {
      y[i].dmin = f32_to_f16(0.f);
    }
    q2_k_finish(x, y[i], L);
  }
}

// Q3_K reference: make_q3_quants per sub-block of 16, 6-bit signed scales against the extreme
// one (-32 / max_scale).
void quantize_q3_k_ref(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ3_K*>(dst);
  int8_t L[kQK_K];
  float scales[kQK_K / 16];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float max_scale = 0, amax = 0;
    for (int j = 0; j < kQK_K / 16; ++j) {
      scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
      if (std::fabs(scales[j]) > amax) {
        amax = std::fabs(scales[j]);
        max_scale = scales[j];
      }
    }
    std::memset(y[i].scales, 0, sizeof y[i].scales);
    if (max_scale != 0) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < kQK_K / 16; ++j) {
        // ggml stores the rounding in an int8 before clamping; the wrap is kept.
        const int8_t l8 = static_cast<int8_t>(nearest_int(iscale * scales[j]));
        q3_k_put_scale(y[i].scales, j, clamp_int(l8, -32, 31) + 32);
      }
      y[i].d = f32_to_f16(1 / iscale);
    } else {
      y[i].d = f32_to_f16(0.f);
    }
    q3_k_finish(x, y[i], L);
  }
}

void quantize_q4_k_ref(const float* x, void* dst, int64_t n) {
  k4_ref(x, static_cast<BlockQ4_K*>(dst), n, 15, -1.f, 0.1f, 20, q4_k_finish);
}

void quantize_q5_k_ref(const float* x, void* dst, int64_t n) {
  k4_ref(x, static_cast<BlockQ5_K*>(dst), n, 31, -0.5f, 0.1f, 15, q5_k_finish);
}

void quantize_q6_k_ref(const float* x, void* dst, int64_t n) {
  q6_k(x, static_cast<BlockQ6_K*>(dst), n, nullptr);
}

// Q8_K: f32 scale max / -127 (max the signed extreme), codes round(x·iscale) ≤ 127, and the
// sums of each 16 codes. An all-zero block is all zeros (ggml leaves its bsums unwritten).
void quantize_q8_k_ref(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float max = 0, amax = 0;
    for (int j = 0; j < kQK_K; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    if (amax == 0) {
      std::memset(&y[i], 0, sizeof(BlockQ8_K));
      continue;
    }
    const float iscale = -127.f / max;
    for (int j = 0; j < kQK_K; ++j)
      y[i].qs[j] = static_cast<int8_t>(std::min(127, nearest_int(iscale * x[j])));
    for (int j = 0; j < kQK_K / 16; ++j) {
      int sum = 0;
      for (int ii = 0; ii < 16; ++ii) sum += y[i].qs[j * 16 + ii];
      y[i].bsums[j] = static_cast<int16_t>(sum);
    }
    const float d = 1 / iscale;
    std::memcpy(&y[i].d, &d, 4);
  }
}

// ---- importance-weighted quantizers ------------------------------------------------------------

// Q4_0/Q5_0: σ² = Σx²/n over the row; per block the symmetric search with the imatrix weights.
void quantize_q4_0_weighted(const float* x, void* dst, int64_t n, const float* importance) {
  auto* y = static_cast<BlockQ4_0*>(dst);
  const float sigma2 = sum_squares(x, n) / static_cast<float>(n);
  float weight[kQK];
  int8_t L[kQK];
  for (int64_t ib = 0; ib < n / kQK; ++ib) {
    const float* xb = x + kQK * ib;
    imatrix_weights(xb, importance + kQK * ib, sigma2, kQK, weight);
    y[ib].d = f32_to_f16(make_qx_quants(kQK, 8, xb, L, weight));
    for (int j = 0; j < 16; ++j) y[ib].qs[j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  }
}

void quantize_q5_0_weighted(const float* x, void* dst, int64_t n, const float* importance) {
  auto* y = static_cast<BlockQ5_0*>(dst);
  const float sigma2 = sum_squares(x, n) / static_cast<float>(n);
  float weight[kQK];
  int8_t L[kQK];
  for (int64_t ib = 0; ib < n / kQK; ++ib) {
    const float* xb = x + kQK * ib;
    imatrix_weights(xb, importance + kQK * ib, sigma2, kQK, weight);
    y[ib].d = f32_to_f16(make_qx_quants(kQK, 16, xb, L, weight));
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const auto q0 = static_cast<uint8_t>(L[j]), q1 = static_cast<uint8_t>(L[j + 16]);
      y[ib].qs[j] = static_cast<uint8_t>((q0 & 0x0f) | ((q1 & 0x0f) << 4));
      qh |= static_cast<uint32_t>((q0 & 0x10u) >> 4) << j;
      qh |= static_cast<uint32_t>((q1 & 0x10u) >> 4) << (j + 16);
    }
    for (int k = 0; k < 4; ++k) y[ib].qh[k] = static_cast<uint8_t>(qh >> (8 * k));
  }
}

// Q4_1/Q5_1: σ² over the row; per block the affine search (step -0.9 + 0.05·is, 37 candidates)
// with the imatrix weights; m = -offset.
void quantize_q4_1_weighted(const float* x, void* dst, int64_t n, const float* importance) {
  auto* y = static_cast<BlockQ4_1*>(dst);
  const float sigma2 = sum_squares(x, n) / static_cast<float>(n);
  float weight[kQK], min;
  uint8_t L[kQK], Laux[kQK];
  for (int64_t ib = 0; ib < n / kQK; ++ib) {
    const float* xb = x + kQK * ib;
    imatrix_weights(xb, importance + kQK * ib, sigma2, kQK, weight);
    const float d = make_qkx_quants(kQK, 15, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
    y[ib].d = f32_to_f16(d);
    y[ib].m = f32_to_f16(-min);
    for (int j = 0; j < 16; ++j) y[ib].qs[j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  }
}

void quantize_q5_1_weighted(const float* x, void* dst, int64_t n, const float* importance) {
  auto* y = static_cast<BlockQ5_1*>(dst);
  const float sigma2 = sum_squares(x, n) / static_cast<float>(n);
  float weight[kQK], min;
  uint8_t L[kQK], Laux[kQK];
  for (int64_t ib = 0; ib < n / kQK; ++ib) {
    const float* xb = x + kQK * ib;
    imatrix_weights(xb, importance + kQK * ib, sigma2, kQK, weight);
    const float d = make_qkx_quants(kQK, 31, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
    y[ib].d = f32_to_f16(d);
    y[ib].m = f32_to_f16(-min);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const uint8_t q0 = L[j], q1 = L[j + 16];
      y[ib].qs[j] = static_cast<uint8_t>((q0 & 0x0f) | ((q1 & 0x0f) << 4));
      qh |= static_cast<uint32_t>((q0 & 0x10u) >> 4) << j;
      qh |= static_cast<uint32_t>((q1 & 0x10u) >> 4) << (j + 16);
    }
    for (int k = 0; k < 4; ++k) y[ib].qh[k] = static_cast<uint8_t>(qh >> (8 * k));
  }
}

// Q2_K: σ² = Σx²/256 per super-block; affine search per sub-block of 16 (squared error), then
// the 4-bit scales and mins by make_qp_quants weighted by each sub-block's Σw.
void quantize_q2_k_weighted(const float* x, void* dst, int64_t n, const float* importance) {
  auto* y = static_cast<BlockQ2_K*>(dst);
  uint8_t L[kQK_K], Laux[16], Ls[kQK_K / 16], Lm[kQK_K / 16];
  float weight[16], sw[kQK_K / 16], mins[kQK_K / 16], scales[kQK_K / 16];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    const float sigma2 = sum_squares(x, kQK_K) / kQK_K;
    for (int j = 0; j < kQK_K / 16; ++j) {
      imatrix_weights(x + 16 * j, importance + kQK_K * i + 16 * j, sigma2, 16, weight);
      sw[j] = sum_of(weight, 16);
      scales[j] = make_qkx_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f,
                                  0.05f, 36, false);
    }
    const float dm = make_qp_quants(kQK_K / 16, 15, scales, Ls, sw);
    const float mm = make_qp_quants(kQK_K / 16, 15, mins, Lm, sw);
    y[i].d = f32_to_f16(dm);
    y[i].dmin = f32_to_f16(mm);
    for (int j = 0; j < kQK_K / 16; ++j) y[i].scales[j] = static_cast<uint8_t>(Ls[j] | (Lm[j] << 4));
    q2_k_finish(x, y[i], L);
  }
}

// Q3_K: σ² = 2·Σx²/256; symmetric search per sub-block of 16 with the imatrix weights, then the
// 16 scales themselves quantized to 6 bits by the same search weighted by each sub-block's Σw.
void quantize_q3_k_weighted(const float* x, void* dst, int64_t n, const float* importance) {
  auto* y = static_cast<BlockQ3_K*>(dst);
  int8_t L[kQK_K], Ls[kQK_K / 16];
  float weight[16], sw[kQK_K / 16], scales[kQK_K / 16];
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    const float sigma2 = 2 * sum_squares(x, kQK_K) / kQK_K;
    for (int j = 0; j < kQK_K / 16; ++j) {
      imatrix_weights(x + 16 * j, importance + kQK_K * i + 16 * j, sigma2, 16, weight);
      sw[j] = sum_of(weight, 16);
      scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
    }
    std::memset(y[i].scales, 0, sizeof y[i].scales);
    const float d_block = make_qx_quants(kQK_K / 16, 32, scales, Ls, sw);
    for (int j = 0; j < kQK_K / 16; ++j) q3_k_put_scale(y[i].scales, j, Ls[j]);
    y[i].d = f32_to_f16(d_block);
    q3_k_finish(x, y[i], L);
  }
}

void quantize_q4_k_weighted(const float* x, void* dst, int64_t n, const float* importance) {
  k4_weighted(x, static_cast<BlockQ4_K*>(dst), n, importance, 15, q4_k_finish);
}

void quantize_q5_k_weighted(const float* x, void* dst, int64_t n, const float* importance) {
  k4_weighted(x, static_cast<BlockQ5_K*>(dst), n, importance, 31, q5_k_finish);
}

// Q6_K: llama.cpp passes the importance itself (not the σ² form) as the search weights.
void quantize_q6_k_weighted(const float* x, void* dst, int64_t n, const float* importance) {
  q6_k(x, static_cast<BlockQ6_K*>(dst), n, importance);
}

}  // namespace llmopt::kernels::detail
