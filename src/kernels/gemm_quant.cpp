// Integer-dot kernels (see gemm_quant.h), Highway dynamic dispatch. The integer sums on the
// AVX2 / AVX3 targets use x86 intrinsics on 256-bit vectors (Highway 1.0.3, Debian 12's, has no
// u8×i8 pairwise multiply-add op): vpmaddubsw (u8×i8 → pairwise i16) then vpmaddwd (→ i32).
// The unsigned operand is the weight code (Q4_0/Q4_K nibbles) or |w| with the sign moved onto
// the activation (vpsignb; Q8_0 and Q6_K's q - 32). i16 lanes never saturate: a nibble pair
// gives ≤ 2·15·127 = 3810 (8 of them summed: 30480), a |q - 32| ≤ 32 pair ≤ 8128 (4 summed:
// 32512), a Q8_0 pair ≤ 2·128·127 = 32512 (widened at once).
#include "kernels/gemm_quant.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "core/threads.h"
#include "kernels/quant_formats.h"
#include "kernels/repack.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/gemm_quant.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

namespace llmopt::kernels::gemm_quant_detail {
#ifndef LLMOPT_KERNELS_GEMM_QUANT_ONCE
#define LLMOPT_KERNELS_GEMM_QUANT_ONCE

// Activation rows interleaved by 8 for the GEMM: block j of rows 8p..8p+7. qs[g][r] holds
// elements 4g..4g+3 of row r's block, so one 32-byte load gives 4 codes of each of the 8 rows.
struct alignas(32) Panel {
  int8_t qs[8][8][4];
  float d[8];
  int32_t sumi[8];
  float sumf[8];
};
static_assert(sizeof(Panel) == 352);

// A weight block of 32 as integer codes (natural element order) and its scalars:
// Σ_i c_i·q_i = mul[0]·Σ_{i<16} code_i·q_i + mul[1]·Σ_{i≥16} code_i·q_i - offset·Σ q_i.
struct RefBlock {
  int8_t code[32];
  int mul[2] = {1, 1};
  int offset = 0;
  float s = 0.0f;  // step
  float m = 0.0f;  // Q4_K: dmin·min (subtracted per unit of x), else 0
};

// Q4_K / Q5_K 6-bit scale and min of sub-block j (ggml's get_scale_min_k4).
inline void scale_min_k4(int j, const uint8_t* q, int& sc, int& mn) {
  if (j < 4) {
    sc = q[j] & 63;
    mn = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

inline void ref_block(DType t, const void* row, int64_t j, RefBlock& b) {
  switch (t) {
    case DType::Q4_0: {
      const auto& blk = static_cast<const BlockQ4_0*>(row)[j];
      for (int i = 0; i < 16; ++i) {
        b.code[i] = static_cast<int8_t>(blk.qs[i] & 0x0f);
        b.code[i + 16] = static_cast<int8_t>(blk.qs[i] >> 4);
      }
      b.offset = 8;
      b.s = f16_to_f32(blk.d);
      return;
    }
    case DType::Q8_0: {
      const auto& blk = static_cast<const BlockQ8_0*>(row)[j];
      std::memcpy(b.code, blk.qs, 32);
      b.s = f16_to_f32(blk.d);
      return;
    }
    case DType::Q4_K: {
      const auto& blk = static_cast<const BlockQ4_K*>(row)[j / 8];
      const int i = static_cast<int>(j % 8);
      const uint8_t* q = blk.qs + 32 * (i / 2);
      for (int l = 0; l < 32; ++l) b.code[l] = static_cast<int8_t>(i % 2 ? q[l] >> 4 : q[l] & 0x0f);
      int sc, mn;
      scale_min_k4(i, blk.scales, sc, mn);
      b.s = f16_to_f32(blk.d) * static_cast<float>(sc);
      b.m = f16_to_f32(blk.dmin) * static_cast<float>(mn);
      return;
    }
    default: {  // Q6_K
      const auto& blk = static_cast<const BlockQ6_K*>(row)[j / 8];
      const int g = static_cast<int>(j % 8), h = g / 4, gg = g % 4;
      const uint8_t* ql = blk.ql + 64 * h + 32 * (gg & 1);
      const uint8_t* qh = blk.qh + 32 * h;
      for (int l = 0; l < 32; ++l)
        b.code[l] = static_cast<int8_t>((((ql[l] >> (4 * (gg >> 1))) & 0xF) | (((qh[l] >> (2 * gg)) & 3) << 4)) - 32);
      b.mul[0] = blk.scales[8 * h + 2 * gg];
      b.mul[1] = blk.scales[8 * h + 2 * gg + 1];
      b.s = f16_to_f32(blk.d);
      return;
    }
  }
}

inline int32_t ref_isum(const RefBlock& b, const int8_t* q, int32_t qsum) {
  int32_t lo = 0, hi = 0;
  for (int i = 0; i < 16; ++i) lo += b.code[i] * q[i];
  for (int i = 16; i < 32; ++i) hi += b.code[i] * q[i];
  return b.mul[0] * lo + b.mul[1] * hi - b.offset * qsum;
}

inline int64_t row_bytes(DType t, int64_t k) { return dtype_bytes_for(t, k); }

// The q8_K form of an activation row (ActRow::qk, dk, bsum).
struct QK {
  const int8_t* qk;
  const float* d;
  const int32_t* bsum;
};

// Q4_K / Q6_K row against the q8_K form (what the x86 GEMV computes, sequentially).
inline float dot_k_ref(DType t, const void* row, const QK& x, int64_t k) {
  float acc = 0.0f, accm = 0.0f;
  for (int64_t s = 0; s < k / kQK_K; ++s) {
    int32_t isum = 0, msum = 0;
    float step = 0.0f, mstep = 0.0f;
    for (int64_t j = s * 8; j < s * 8 + 8; ++j) {
      RefBlock b;
      ref_block(t, row, j, b);
      const int8_t* q = x.qk + j * 32;
      int32_t lo = 0, hi = 0;
      for (int i = 0; i < 16; ++i) lo += b.code[i] * q[i];
      for (int i = 16; i < 32; ++i) hi += b.code[i] * q[i];
      if (t == DType::Q4_K) {
        const auto& blk = static_cast<const BlockQ4_K*>(row)[s];
        int sc, mn;
        scale_min_k4(static_cast<int>(j % 8), blk.scales, sc, mn);
        isum += sc * (lo + hi);
        msum += mn * x.bsum[j];
        step = f16_to_f32(blk.d);
        mstep = f16_to_f32(blk.dmin);
      } else {
        isum += b.mul[0] * lo + b.mul[1] * hi;
        step = b.s;
      }
    }
    acc = std::fma(static_cast<float>(isum), x.d[s] * step, acc);
    accm = std::fma(static_cast<float>(msum), x.d[s] * mstep, accm);
  }
  return acc - accm;
}

#endif  // LLMOPT_KERNELS_GEMM_QUANT_ONCE
}  // namespace llmopt::kernels::gemm_quant_detail

#undef LLMOPT_GQ_X86
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#include <immintrin.h>
#define LLMOPT_GQ_X86 1
#else
#define LLMOPT_GQ_X86 0
#endif

HWY_BEFORE_NAMESPACE();
namespace llmopt::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using gemm_quant_detail::Panel;
using gemm_quant_detail::QK;
using gemm_quant_detail::ref_block;
using gemm_quant_detail::ref_isum;
using gemm_quant_detail::RefBlock;

// ---------------------------------------------------------------- activation quantization
// One block of 32: amax by vector max, then q = NearestInt(x·id) (ties to even, as nearbyint).
// n = 32·c values with one step: amax by vector max, then q = NearestInt(x·id) (ties to even, as
// nearbyint); sums[i] = Σ of the i-th 32 codes.
HWY_INLINE void QuantSpan(const float* HWY_RESTRICT x, int n, int8_t* HWY_RESTRICT qs, float& d_out,
                          int32_t* HWY_RESTRICT sums) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<int8_t, decltype(df)> d8;
  const int L = static_cast<int>(hn::Lanes(df));
  auto vmax = hn::Zero(df);
  for (int j = 0; j < n; j += L) vmax = hn::Max(vmax, hn::Abs(hn::LoadU(df, x + j)));
  const float amax = hn::GetLane(hn::MaxOfLanes(df, vmax));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const auto vid = hn::Set(df, id);
  for (int b = 0; b < n; b += kActBlock) {
    auto vsum = hn::Zero(di);
    for (int j = b; j < b + kActBlock; j += L) {
      const auto q = hn::NearestInt(hn::Mul(hn::LoadU(df, x + j), vid));
      vsum = hn::Add(vsum, q);
      hn::StoreU(hn::DemoteTo(d8, q), d8, qs + j);
    }
    sums[b / kActBlock] = hn::GetLane(hn::SumOfLanes(di, vsum));
  }
  d_out = d;
}

HWY_INLINE void QuantBlock(const float* HWY_RESTRICT x, int8_t* HWY_RESTRICT qs, float& d_out, int32_t& sum_out) {
  QuantSpan(x, kActBlock, qs, d_out, &sum_out);
}

void QuantizeK(const float* x, int8_t* qs, float* d, int32_t* bsum, int64_t k) {
  for (int64_t s = 0; s < k / kQK_K; ++s) QuantSpan(x + s * kQK_K, kQK_K, qs + s * kQK_K, d[s], bsum + s * 8);
}

void QuantizeAct(const float* x, ActBlock* out, int64_t k) {
  for (int64_t b = 0; b < k / kActBlock; ++b) {
    int32_t s;
    QuantBlock(x + b * kActBlock, out[b].qs, out[b].d, s);
    out[b].sum = static_cast<float>(s);
  }
}

// Rows [r0, r1) of X (m rows) into panels; rows ≥ m of the last panel are zero.
void QuantizePanels(const float* x, Panel* panels, int64_t m, int64_t k, int64_t p0, int64_t p1) {
  const int64_t nb = k / kActBlock;
  alignas(32) int8_t tmp[kActBlock];
  for (int64_t p = p0; p < p1; ++p) {
    for (int r = 0; r < 8; ++r) {
      const int64_t row = p * 8 + r;
      for (int64_t j = 0; j < nb; ++j) {
        Panel& P = panels[p * nb + j];
        float d = 0.0f;
        int32_t s = 0;
        if (row < m) {
          QuantBlock(x + row * k + j * kActBlock, tmp, d, s);
        } else {
          std::memset(tmp, 0, sizeof(tmp));
        }
        for (int g = 0; g < 8; ++g) std::memcpy(P.qs[g][r], tmp + 4 * g, 4);
        P.d[r] = d;
        P.sumi[r] = s;
        P.sumf[r] = static_cast<float>(s);
      }
    }
  }
}

#if LLMOPT_GQ_X86
// ---------------------------------------------------------------- x86 (256-bit) kernels
HWY_INLINE float F16(uint16_t h) { return _cvtsh_ss(h); }  // exact, as f16_to_f32

// A weight block in registers: u = unsigned operand of maddubs, s = signed codes (signed kinds),
// mul = i16 multipliers for vpmaddwd (ones, or Q6_K's two sub-block scales), s/m as in RefBlock.
struct XBlock {
  __m256i u, s, mul;
  float step, m;
};

HWY_INLINE __m256i Ones16() { return _mm256_set1_epi16(1); }

template <DType T>
constexpr bool kSigned = T == DType::Q8_0 || T == DType::Q6_K;

template <DType T>
HWY_INLINE void LoadBlock(const void* row, int64_t j, XBlock& b) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  if constexpr (T == DType::Q4_0) {
    const auto& blk = static_cast<const BlockQ4_0*>(row)[j];
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.qs));
    b.u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), m4);
    b.mul = Ones16();
    b.step = F16(blk.d);
    b.m = 0.0f;
  } else if constexpr (T == DType::Q8_0) {
    const auto& blk = static_cast<const BlockQ8_0*>(row)[j];
    b.s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.qs));
    b.u = _mm256_abs_epi8(b.s);
    b.mul = Ones16();
    b.step = F16(blk.d);
    b.m = 0.0f;
  } else if constexpr (T == DType::Q4_K) {
    const auto& blk = static_cast<const BlockQ4_K*>(row)[j / 8];
    const int i = static_cast<int>(j % 8);
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.qs + 32 * (i / 2)));
    b.u = _mm256_and_si256(i % 2 ? _mm256_srli_epi16(raw, 4) : raw, m4);
    b.mul = Ones16();
    int sc, mn;
    gemm_quant_detail::scale_min_k4(i, blk.scales, sc, mn);
    b.step = F16(blk.d) * static_cast<float>(sc);
    b.m = F16(blk.dmin) * static_cast<float>(mn);
  } else {  // Q6_K
    const auto& blk = static_cast<const BlockQ6_K*>(row)[j / 8];
    const int g = static_cast<int>(j % 8), h = g / 4, gg = g % 4;
    const __m256i ql = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.ql + 64 * h + 32 * (gg & 1)));
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.qh + 32 * h));
    const __m256i lo = _mm256_and_si256(_mm256_srl_epi16(ql, _mm_cvtsi32_si128(4 * (gg >> 1))), m4);
    const __m256i hi = _mm256_slli_epi16(
        _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * gg)), _mm256_set1_epi8(3)), 4);
    b.s = _mm256_sub_epi8(_mm256_or_si256(lo, hi), _mm256_set1_epi8(32));
    b.u = _mm256_abs_epi8(b.s);
    b.mul = _mm256_set_m128i(_mm_set1_epi16(blk.scales[8 * h + 2 * gg + 1]),
                             _mm_set1_epi16(blk.scales[8 * h + 2 * gg]));
    b.step = F16(blk.d);
    b.m = 0.0f;
  }
}

HWY_INLINE float HSum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 s2 = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

HWY_INLINE __m256i LoadQ(const ActBlock& a) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.qs));
}

// Σ_j d_x·s_j·I_j of one block into acc (signed kinds by the sign trick).
HWY_INLINE __m256 BlockFma(__m256i u, __m256i q, __m256i mul, float scale, __m256 acc) {
  const __m256i i32 = _mm256_madd_epi16(_mm256_maddubs_epi16(u, q), mul);
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(i32), _mm256_set1_ps(scale), acc);
}

// Decode: one row against one natural-order activation row; blocks alternate between two
// vector accumulators (Q4_0 takes the sign trick on q - 8 so no scalar correction chain is
// needed; the K formats go a super-block at a time, scales decoded once).
template <DType T>
float DotRow(const void* row, const ActBlock* HWY_RESTRICT x, const ActPair* HWY_RESTRICT xp, const QK& xk,
             int64_t k) {
  const int64_t nb = k / kActBlock;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  const __m256i ones = Ones16(), m4 = _mm256_set1_epi8(0x0f);
  if constexpr (T == DType::Q4_0) {
    // Two blocks per vector: [qs_j | qs_j+1] → low nibbles of both against pair.lo, high against
    // pair.hi; the i32 lanes 0-3 hold block j's partial sums, 4-7 block j+1's.
    const auto* blocks = static_cast<const BlockQ4_0*>(row);
    const __m256i idx = _mm256_set_epi32(1, 1, 1, 1, 0, 0, 0, 0);
    for (int64_t j = 0; j < nb; j += 2) {
      const ActPair& a = xp[j / 2];
      const bool two = j + 1 < nb;
      const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks[j].qs));
      const __m128i q1 = two ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks[j + 1].qs)) : _mm_setzero_si128();
      const __m256i w = _mm256_set_m128i(q1, q0);
      const __m256i lo = _mm256_and_si256(w, m4), hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), m4);
      const __m256i p = _mm256_add_epi16(
          _mm256_maddubs_epi16(lo, _mm256_load_si256(reinterpret_cast<const __m256i*>(a.lo))),
          _mm256_maddubs_epi16(hi, _mm256_load_si256(reinterpret_cast<const __m256i*>(a.hi))));
      const __m256i isum = _mm256_sub_epi32(_mm256_madd_epi16(p, ones),
                                            _mm256_load_si256(reinterpret_cast<const __m256i*>(a.off8)));
      const __m128i h2 = _mm_insert_epi16(_mm_cvtsi32_si128(blocks[j].d), two ? blocks[j + 1].d : 0, 1);
      const __m256 dw = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_cvtph_ps(h2)), idx);
      const __m256 sc = _mm256_mul_ps(dw, _mm256_load_ps(a.d));
      if ((j / 2) & 1)
        acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), sc, acc1);
      else
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), sc, acc0);
    }
    return HSum(_mm256_add_ps(acc0, acc1));
  } else if constexpr (T == DType::Q8_0) {
    const int64_t bb = T == DType::Q4_0 ? sizeof(BlockQ4_0) : sizeof(BlockQ8_0);
    const auto* p = static_cast<const uint8_t*>(row);
    auto signed_codes = [&](int64_t j) {
      if constexpr (T == DType::Q4_0) {
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + j * bb + 2));
        return _mm256_sub_epi8(_mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), m4),
                               _mm256_set1_epi8(8));
      } else {
        return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + j * bb + 2));
      }
    };
    auto step = [&](int64_t j) {
      uint16_t h;
      std::memcpy(&h, p + j * bb, 2);
      return F16(h);
    };
    int64_t j = 0;
    for (; j + 2 <= nb; j += 2) {
      const __m256i w0 = signed_codes(j), w1 = signed_codes(j + 1);
      acc0 = BlockFma(_mm256_abs_epi8(w0), _mm256_sign_epi8(LoadQ(x[j]), w0), ones, x[j].d * step(j), acc0);
      acc1 = BlockFma(_mm256_abs_epi8(w1), _mm256_sign_epi8(LoadQ(x[j + 1]), w1), ones, x[j + 1].d * step(j + 1),
                      acc1);
    }
    if (j < nb) {
      const __m256i w0 = signed_codes(j);
      acc0 = BlockFma(_mm256_abs_epi8(w0), _mm256_sign_epi8(LoadQ(x[j]), w0), ones, x[j].d * step(j), acc0);
    }
    return HSum(_mm256_add_ps(acc0, acc1));
  } else if constexpr (T == DType::Q4_K) {
    // Against the q8_K form: Σ_sub scale·(nibbles·q) in int32 over the super-block, one fma.
    const auto* blocks = static_cast<const BlockQ4_K*>(row);
    float corr = 0.0f;
    for (int64_t sb = 0; sb < nb / 8; ++sb) {
      const BlockQ4_K& B = blocks[sb];
      const int8_t* q = xk.qk + sb * kQK_K;
      const int32_t* bs = xk.bsum + sb * 8;
      int sc[8], mn[8];
      for (int i = 0; i < 8; ++i) gemm_quant_detail::scale_min_k4(i, B.scales, sc[i], mn[i]);
      int32_t msum = 0;
      for (int i = 0; i < 8; ++i) msum += mn[i] * bs[i];
      __m256i isum = _mm256_setzero_si256();
      for (int c = 0; c < 4; ++c) {
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(B.qs + 32 * c));
        const __m256i plo = _mm256_maddubs_epi16(_mm256_and_si256(raw, m4),
                                                 _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 64 * c)));
        const __m256i phi = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4),
                                                 _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 64 * c + 32)));
        isum = _mm256_add_epi32(isum, _mm256_add_epi32(_mm256_madd_epi16(plo, _mm256_set1_epi16(static_cast<int16_t>(sc[2 * c]))),
                                                       _mm256_madd_epi16(phi, _mm256_set1_epi16(static_cast<int16_t>(sc[2 * c + 1])))));
      }
      const float dx = xk.d[sb];
      if (sb & 1)
        acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(dx * F16(B.d)), acc1);
      else
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(dx * F16(B.d)), acc0);
      corr = std::fma(dx * F16(B.dmin), static_cast<float>(msum), corr);
    }
    return HSum(_mm256_add_ps(acc0, acc1)) - corr;
  } else {  // Q6_K against the q8_K form: sign trick on q - 32, sub-block scales in vpmaddwd.
    const auto* blocks = static_cast<const BlockQ6_K*>(row);
    const __m256i three = _mm256_set1_epi8(3), m32 = _mm256_set1_epi8(32);
    for (int64_t sb = 0; sb < nb / 8; ++sb) {
      const BlockQ6_K& B = blocks[sb];
      const int8_t* qx = xk.qk + sb * kQK_K;
      __m256i isum = _mm256_setzero_si256();
      for (int h = 0; h < 2; ++h) {
        const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(B.ql + 64 * h));
        const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(B.ql + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(B.qh + 32 * h));
        const __m256i c[4] = {
            _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, three), 4)),
            _mm256_or_si256(_mm256_and_si256(ql1, m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), three), 4)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), three), 4)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), three), 4))};
        for (int gg = 0; gg < 4; ++gg) {
          const int8_t* scp = B.scales + 8 * h + 2 * gg;
          const __m256i w = _mm256_sub_epi8(c[gg], m32);
          const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qx + 128 * h + 32 * gg));
          const __m256i mul = _mm256_set_m128i(_mm_set1_epi16(scp[1]), _mm_set1_epi16(scp[0]));
          isum = _mm256_add_epi32(
              isum, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(q, w)), mul));
        }
      }
      const __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(xk.d[sb] * F16(B.d)));
      if (sb & 1)
        acc1 = _mm256_add_ps(f, acc1);
      else
        acc0 = _mm256_add_ps(f, acc0);
    }
    return HSum(_mm256_add_ps(acc0, acc1));
  }
}

// A run of weight rows prepared for the GEMM: per row, the k unsigned codes (and signed codes
// for the signed kinds) in natural order, and per block its step, min and Q6_K multipliers.
struct Prepared {
  std::vector<uint8_t> u;
  std::vector<int8_t> s;
  std::vector<float> step, m;
  std::vector<int16_t> mul;  // [row][block][2]
};

template <DType T>
void Prepare(const uint8_t* row, int64_t nb, int r, Prepared& P) {
  for (int64_t j = 0; j < nb; ++j) {
    XBlock b;
    LoadBlock<T>(row, j, b);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(P.u.data() + (r * nb + j) * 32), b.u);
    if constexpr (kSigned<T>) _mm256_storeu_si256(reinterpret_cast<__m256i*>(P.s.data() + (r * nb + j) * 32), b.s);
    if constexpr (T == DType::Q6_K) {
      P.mul[(r * nb + j) * 2] = static_cast<int16_t>(_mm256_extract_epi16(b.mul, 0));
      P.mul[(r * nb + j) * 2 + 1] = static_cast<int16_t>(_mm256_extract_epi16(b.mul, 8));
    }
    P.step[r * nb + j] = b.step;
    P.m[r * nb + j] = b.m;
  }
}

// GEMM microkernel: NR prepared weight rows × one panel of 8 activation rows; out[r] gets the 8
// lanes (one per activation row) of output column r.
template <DType T, int NR>
HWY_INLINE void PanelRows(const Prepared& W, int r0, const Panel* HWY_RESTRICT panel, int64_t nb, __m256* out) {
  __m256 acc[NR], accm[NR];
  for (int r = 0; r < NR; ++r) acc[r] = accm[r] = _mm256_setzero_ps();
  const __m256i ones = Ones16();
  for (int64_t j = 0; j < nb; ++j) {
    const Panel& P = panel[j];
    __m256i i16a[NR], i16b[NR], i32[NR];
    for (int r = 0; r < NR; ++r) i16a[r] = i16b[r] = i32[r] = _mm256_setzero_si256();
    for (int g = 0; g < 8; ++g) {
      const __m256i q = _mm256_load_si256(reinterpret_cast<const __m256i*>(P.qs[g]));
      for (int r = 0; r < NR; ++r) {
        const int64_t off = ((r0 + r) * nb + j) * 32 + 4 * g;
        int32_t w4;
        std::memcpy(&w4, W.u.data() + off, 4);
        const __m256i wu = _mm256_set1_epi32(w4);
        __m256i p;
        if constexpr (kSigned<T>) {
          int32_t s4;
          std::memcpy(&s4, W.s.data() + off, 4);
          p = _mm256_maddubs_epi16(wu, _mm256_sign_epi8(q, _mm256_set1_epi32(s4)));
        } else {
          p = _mm256_maddubs_epi16(wu, q);
        }
        if constexpr (T == DType::Q8_0) {
          i32[r] = _mm256_add_epi32(i32[r], _mm256_madd_epi16(p, ones));
        } else if constexpr (T == DType::Q6_K) {
          if (g < 4)
            i16a[r] = _mm256_add_epi16(i16a[r], p);
          else
            i16b[r] = _mm256_add_epi16(i16b[r], p);
        } else {
          i16a[r] = _mm256_add_epi16(i16a[r], p);
        }
      }
    }
    const __m256 dx = _mm256_load_ps(P.d);
    for (int r = 0; r < NR; ++r) {
      const int64_t bj = (r0 + r) * nb + j;
      __m256i isum;
      if constexpr (T == DType::Q8_0) {
        isum = i32[r];
      } else if constexpr (T == DType::Q6_K) {
        isum = _mm256_add_epi32(_mm256_madd_epi16(i16a[r], _mm256_set1_epi16(W.mul[2 * bj])),
                                _mm256_madd_epi16(i16b[r], _mm256_set1_epi16(W.mul[2 * bj + 1])));
      } else {
        isum = _mm256_madd_epi16(i16a[r], ones);
      }
      if constexpr (T == DType::Q4_0)
        isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(P.sumi)), 3));
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dx, _mm256_set1_ps(W.step[bj])), acc[r]);
      if constexpr (T == DType::Q4_K)
        accm[r] = _mm256_fmadd_ps(_mm256_load_ps(P.sumf), _mm256_mul_ps(dx, _mm256_set1_ps(W.m[bj])), accm[r]);
    }
  }
  for (int r = 0; r < NR; ++r) out[r] = T == DType::Q4_K ? _mm256_sub_ps(acc[r], accm[r]) : acc[r];
}

// Rows per microkernel call: AVX-512 targets have 32 vector registers.
constexpr int kNR = HWY_TARGET == HWY_AVX2 ? 4 : 8;

// Output rows [r0, r1) of Y for all panels: the rows are prepared once, then every panel passes
// over them kNR rows at a time.
// w points at row r0 (in ggml blocks).
template <DType T>
void GemmRowsT(const void* w, const Panel* panels, const float* bias, float* y, int64_t m, int64_t n,
               int64_t k, int64_t r0, int64_t r1) {
  const int64_t nb = k / kActBlock, np = (m + 7) / 8, nr = r1 - r0;
  const int64_t rb = gemm_quant_detail::row_bytes(T, k);
  const auto* base = static_cast<const uint8_t*>(w);
  thread_local Prepared W;
  W.u.resize(static_cast<size_t>(nr * k));
  if (kSigned<T>) W.s.resize(static_cast<size_t>(nr * k));
  W.step.resize(static_cast<size_t>(nr * nb));
  W.m.resize(static_cast<size_t>(nr * nb));
  if (T == DType::Q6_K) W.mul.resize(static_cast<size_t>(nr * nb * 2));
  for (int64_t r = 0; r < nr; ++r) Prepare<T>(base + r * rb, nb, static_cast<int>(r), W);
  alignas(32) float lanes[8];
  auto store = [&](int64_t r, int64_t p, __m256 v) {
    _mm256_store_ps(lanes, v);
    for (int i = 0; i < 8 && p * 8 + i < m; ++i) y[(p * 8 + i) * n + r] = bias ? lanes[i] + bias[r] : lanes[i];
  };
  for (int64_t p = 0; p < np; ++p) {
    int64_t r = 0;
    for (; r + kNR <= nr; r += kNR) {
      __m256 out[kNR];
      PanelRows<T, kNR>(W, static_cast<int>(r), panels + p * nb, nb, out);
      for (int i = 0; i < kNR; ++i) store(r0 + r + i, p, out[i]);
    }
    for (; r < nr; ++r) {
      __m256 out[1];
      PanelRows<T, 1>(W, static_cast<int>(r), panels + p * nb, nb, out);
      store(r0 + r, p, out[0]);
    }
  }
}

float DotActQ8(DType t, const void* row, const ActBlock* x, const ActPair* xp, const QK& xk, int64_t k) {
  switch (t) {
    case DType::Q4_0: return DotRow<DType::Q4_0>(row, x, xp, xk, k);
    case DType::Q8_0: return DotRow<DType::Q8_0>(row, x, xp, xk, k);
    case DType::Q4_K: return DotRow<DType::Q4_K>(row, x, xp, xk, k);
    default: return DotRow<DType::Q6_K>(row, x, xp, xk, k);
  }
}

void GemmRows(DType t, const void* w, const Panel* panels, const float* bias, float* y, int64_t m,
              int64_t n, int64_t k, int64_t r0, int64_t r1) {
  switch (t) {
    case DType::Q4_0: return GemmRowsT<DType::Q4_0>(w, panels, bias, y, m, n, k, r0, r1);
    case DType::Q8_0: return GemmRowsT<DType::Q8_0>(w, panels, bias, y, m, n, k, r0, r1);
    case DType::Q4_K: return GemmRowsT<DType::Q4_K>(w, panels, bias, y, m, n, k, r0, r1);
    default: return GemmRowsT<DType::Q6_K>(w, panels, bias, y, m, n, k, r0, r1);
  }
}

#else  // ---------------------------------------------------------------- other targets: scalar

float DotActQ8(DType t, const void* row, const ActBlock* x, const ActPair*, const QK& xk, int64_t k) {
  if (t == DType::Q4_K || t == DType::Q6_K) return gemm_quant_detail::dot_k_ref(t, row, xk, k);
  float acc = 0.0f, accm = 0.0f;
  for (int64_t j = 0; j < k / kActBlock; ++j) {
    RefBlock b;
    ref_block(t, row, j, b);
    const int32_t isum = ref_isum(b, x[j].qs, static_cast<int32_t>(x[j].sum));
    acc = std::fma(static_cast<float>(isum), x[j].d * b.s, acc);
    accm = std::fma(x[j].sum, x[j].d * b.m, accm);
  }
  return acc - accm;
}

void GemmRows(DType t, const void* w, const Panel* panels, const float* bias, float* y, int64_t m,
              int64_t n, int64_t k, int64_t r0, int64_t r1) {
  const int64_t nb = k / kActBlock, rb = gemm_quant_detail::row_bytes(t, k);
  const auto* base = static_cast<const uint8_t*>(w);
  std::vector<RefBlock> blocks(static_cast<size_t>(nb));
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t j = 0; j < nb; ++j) ref_block(t, base + (r - r0) * rb, j, blocks[j]);
    for (int64_t row = 0; row < m; ++row) {
      const int64_t p = row / 8, l = row % 8;
      float acc = 0.0f, accm = 0.0f;
      for (int64_t j = 0; j < nb; ++j) {
        const Panel& P = panels[p * nb + j];
        int8_t q[32];
        for (int g = 0; g < 8; ++g) std::memcpy(q + 4 * g, P.qs[g][l], 4);
        const int32_t isum = ref_isum(blocks[j], q, P.sumi[l]);
        acc = std::fma(static_cast<float>(isum), P.d[l] * blocks[j].s, acc);
        accm = std::fma(P.sumf[l], P.d[l] * blocks[j].m, accm);
      }
      const float v = acc - accm;
      y[row * n + r] = bias ? v + bias[r] : v;
    }
  }
}
#endif

void GemvActRows(DType t, const void* w, const ActBlock* x, const ActPair* xp, const QK& xk, const float* bias,
                 float* y, int64_t r0, int64_t r1, int64_t k) {
  const int64_t rb = gemm_quant_detail::row_bytes(t, k);
  const auto* base = static_cast<const uint8_t*>(w);
  for (int64_t r = r0; r < r1; ++r) {
    const float v = DotActQ8(t, base + r * rb, x, xp, xk, k);
    y[r] = bias ? v + bias[r] : v;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace llmopt::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmopt::kernels {
HWY_EXPORT(QuantizeAct);
HWY_EXPORT(QuantizeK);
HWY_EXPORT(QuantizePanels);
HWY_EXPORT(DotActQ8);
HWY_EXPORT(GemvActRows);
HWY_EXPORT(GemmRows);

using gemm_quant_detail::Panel;

namespace {
constexpr int64_t kRowsPerChunk = 32;

void check(const char* name, DType t, int64_t m, int64_t n, int64_t k) {
  LLMOPT_CHECK_INPUT(act_q8_supports(t),
                     "[kernels.{}] weight type {} has no int8-activation kernel (expected Q8_0, "
                     "Q4_0, Q4_K or Q6_K)",
                     name, dtype_name(t));
  LLMOPT_CHECK_INPUT(m >= 0 && n >= 0 && k >= 0, "[kernels.{}] sizes must be >= 0, got m={} n={} k={}",
                     name, m, n, k);
  const int64_t block = dtype_block_elems(t);
  LLMOPT_CHECK_INPUT(k % block == 0, "[kernels.{}] {} rows must hold whole blocks: k={} is not a multiple of {}",
                     name, dtype_name(t), k, block);
}

int resolve(int num_threads, int64_t work) {
  if (work < (int64_t{1} << 15)) return 1;
  return num_threads > 0 ? num_threads : llmopt::threads();
}
}  // namespace

bool act_q8_supports(DType t) {
  return t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_K || t == DType::Q6_K;
}

void quantize_act(const float* x, ActBlock* out, int64_t k) {
  HWY_DYNAMIC_DISPATCH(QuantizeAct)(x, out, k);
}

void quantize_act_ref(const float* x, ActBlock* out, int64_t k) {
  for (int64_t b = 0; b < k / kActBlock; ++b, x += kActBlock) {
    float amax = 0.0f;
    for (int i = 0; i < kActBlock; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int32_t s = 0;
    for (int i = 0; i < kActBlock; ++i) {
      const int q = static_cast<int>(std::nearbyint(x[i] * id));
      out[b].qs[i] = static_cast<int8_t>(q);
      s += q;
    }
    out[b].d = d;
    out[b].sum = static_cast<float>(s);
  }
}

void dequantize_act(const ActBlock* in, float* out, int64_t k) {
  for (int64_t b = 0; b < k / kActBlock; ++b)
    for (int i = 0; i < kActBlock; ++i) out[b * kActBlock + i] = static_cast<float>(in[b].qs[i]) * in[b].d;
}

void ActRow::quantize(const float* x, int64_t kk) {
  k = kk;
  const int64_t nb = kk / kActBlock;
  blocks.resize(static_cast<size_t>(nb));
  pairs.resize(static_cast<size_t>((nb + 1) / 2));
  quantize_act(x, blocks.data(), kk);
  if (kk % kQK_K == 0) {
    qk.resize(static_cast<size_t>(kk));
    dk.resize(static_cast<size_t>(kk / kQK_K));
    bsum.resize(static_cast<size_t>(nb));
    HWY_DYNAMIC_DISPATCH(QuantizeK)(x, qk.data(), dk.data(), bsum.data(), kk);
  } else {
    qk.clear(), dk.clear(), bsum.clear();
  }
  for (int64_t p = 0; p < (nb + 1) / 2; ++p) {
    ActPair& a = pairs[p];
    std::memset(&a, 0, sizeof(a));
    for (int h = 0; h < 2 && 2 * p + h < nb; ++h) {
      const ActBlock& b = blocks[2 * p + h];
      std::memcpy(a.lo + 16 * h, b.qs, 16);
      std::memcpy(a.hi + 16 * h, b.qs + 16, 16);
      for (int l = 0; l < 4; ++l) a.d[4 * h + l] = b.d;
      a.off8[4 * h] = 8 * static_cast<int32_t>(b.sum);
    }
  }
}

namespace {
gemm_quant_detail::QK qk_of(const ActRow& x) { return {x.qk.data(), x.dk.data(), x.bsum.data()}; }
}  // namespace

float dot_act_q8(DType t, const void* w_row, const ActRow& x) {
  return HWY_DYNAMIC_DISPATCH(DotActQ8)(t, w_row, x.blocks.data(), x.pairs.data(), qk_of(x), x.k);
}

float dot_act_q8k_ref(DType t, const void* w_row, const ActRow& x) {
  return gemm_quant_detail::dot_k_ref(t, w_row, qk_of(x), x.k);
}

float dot_act_q8_ref(DType t, const void* w_row, const ActBlock* x, int64_t k) {
  float acc = 0.0f, accm = 0.0f;
  for (int64_t j = 0; j < k / kActBlock; ++j) {
    gemm_quant_detail::RefBlock b;
    gemm_quant_detail::ref_block(t, w_row, j, b);
    const int32_t isum = gemm_quant_detail::ref_isum(b, x[j].qs, static_cast<int32_t>(x[j].sum));
    acc = std::fma(static_cast<float>(isum), x[j].d * b.s, acc);
    accm = std::fma(x[j].sum, x[j].d * b.m, accm);
  }
  return acc - accm;
}

void gemv_act_q8_rows(DType t, const void* w, const ActRow& x, const float* bias, float* y, int64_t r0,
                      int64_t r1) {
  if (r1 > r0) HWY_DYNAMIC_DISPATCH(GemvActRows)(t, w, x.blocks.data(), x.pairs.data(), qk_of(x), bias, y, r0, r1, x.k);
}

void gemv_act_q8(DType t, const void* w, const float* x, const float* bias, float* y, int64_t n, int64_t k,
                 int num_threads) {
  check("gemv_act_q8", t, 1, n, k);
  ActRow xa;
  xa.quantize(x, k);
  const int threads = resolve(num_threads, n * k);
  const int64_t chunks = (n + kRowsPerChunk - 1) / kRowsPerChunk;
  auto* rows = HWY_DYNAMIC_DISPATCH(GemvActRows);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t c = 0; c < chunks; ++c)
    rows(t, w, xa.blocks.data(), xa.pairs.data(), qk_of(xa), bias, y, c * kRowsPerChunk,
         std::min(n, (c + 1) * kRowsPerChunk), k);
}

void gemm_quant(DType t, const void* w, const float* x, const float* bias, float* y, int64_t m, int64_t n,
                int64_t k, int num_threads, bool w_repacked) {
  check("gemm_quant", t, m, n, k);
  LLMOPT_CHECK_INPUT(!w_repacked || repack_supports(t, n, k),
                     "[kernels.gemm_quant] repacked weights must be Q4_0/Q4_K with a multiple of 8 rows, got {} n={}",
                     dtype_name(t), n);
  if (m == 0 || n == 0) return;
  const int64_t rb = dtype_bytes_for(t, k);
  const int64_t nb = k / kActBlock, np = (m + 7) / 8;
  std::vector<Panel> panels(static_cast<size_t>(np * nb));
  const int threads = resolve(num_threads, m * n * k);
  const int64_t chunks = (n + kRowsPerChunk - 1) / kRowsPerChunk;
  auto* quant = HWY_DYNAMIC_DISPATCH(QuantizePanels);
  auto* rows = HWY_DYNAMIC_DISPATCH(GemmRows);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
#pragma omp for schedule(static)
    for (int64_t p = 0; p < np; ++p) quant(x, panels.data(), m, k, p, p + 1);
#pragma omp for schedule(dynamic)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t r0 = c * kRowsPerChunk, r1 = std::min(n, (c + 1) * kRowsPerChunk);
      const uint8_t* rows_at = static_cast<const uint8_t*>(w) + r0 * rb;
      if (w_repacked) {  // the chunk's rows back in ggml blocks (chunks are whole groups of 8)
        thread_local std::vector<uint8_t> unpacked;
        unpacked.resize(static_cast<size_t>((r1 - r0) * rb));
        unpack_rows(t, w, k, r0, r1, unpacked.data());
        rows_at = unpacked.data();
      }
      rows(t, rows_at, panels.data(), bias, y, m, n, k, r0, r1);
    }
  }
}

void gemm_quant_ref(DType t, const void* w, const float* x, const float* bias, float* y, int64_t m, int64_t n,
                    int64_t k) {
  check("gemm_quant_ref", t, m, n, k);
  const int64_t rb = dtype_bytes_for(t, k);
  std::vector<ActBlock> xa(static_cast<size_t>(k / kActBlock));
  for (int64_t i = 0; i < m; ++i) {
    quantize_act_ref(x + i * k, xa.data(), k);
    for (int64_t r = 0; r < n; ++r) {
      const float v = dot_act_q8_ref(t, static_cast<const uint8_t*>(w) + r * rb, xa.data(), k);
      y[i * n + r] = bias ? v + bias[r] : v;
    }
  }
}

}  // namespace llmopt::kernels
#endif  // HWY_ONCE
