// Integer-dot kernels on int8-quantized activations (gemm_quant.h) for Q8_0, Q4_0, Q4_K, Q6_K.
//
// Oracles:
// (a) the scalar twins: quantize_act ≡ quantize_act_ref and gemm_quant ≡ gemm_quant_ref bit for
//     bit on every SIMD target and thread count (integer block sums are exact and each output is
//     one fma per block in block order in both); dot_act_q8 (decode, lanes over k) within kBound
//     of dot_act_q8_ref (Q8_0, Q4_0) or dot_act_q8k_ref (Q4_K, Q6_K: activations in q8_K form,
//     one step per 256).
// (b) a float64 matmul Σ ŵ_i·x̂_i on the weights decoded by this file's own float64 decoder
//     (from the block layouts of ggml-common.h, checked against dequantize_row) and on the
//     dequantized activations x̂ = q·d of quantize_act_ref.
//
// Tolerance (kBound): every kernel computes Σ_j fl(d_x·s_j)·I_j − Σ_j fl(d_x·m_j)·S_j with exact
// integers I_j, S_j; exactly evaluated that is Σ ŵ_i·x̂_i (ŵ_i = a_i − b_i, a_i the step part,
// b_i Q4_K's min part). The scale products round once (u = 2^-24), the accumulation over nb = k/32
// blocks at most nb times, the lane reduction ≤ 3 times, the min subtraction and bias once more:
// |error| ≤ (nb + 8)·u·M to first order, M = |bias| + Σ_i (|a_i| + |b_i|)·|x̂_i|. Tests use twice
// that (two kernels each within it differ by at most the sum; second-order terms are ≪ 1 %).
#include "kernels/gemm_quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "each_simd_target.h"
#include "kernels/quant_formats.h"

namespace llmopt::kernels {
namespace {

const DType kTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K};

// Random blocks: every byte random (codes, packed scales), step fields set to finite f16 values.
std::vector<uint8_t> random_weights(DType t, int64_t n, int64_t k, std::mt19937& rng) {
  std::vector<uint8_t> w(static_cast<size_t>(dtype_bytes_for(t, n * k)));
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : w) b = static_cast<uint8_t>(byte(rng));
  std::uniform_real_distribution<float> step(0.001f, 0.05f);
  const int64_t blocks = n * k / dtype_block_elems(t), bb = dtype_block_bytes(t);
  for (int64_t i = 0; i < blocks; ++i) {
    uint8_t* p = w.data() + i * bb;
    auto put = [&](size_t off) {
      const uint16_t h = f32_to_f16(step(rng));
      std::memcpy(p + off, &h, 2);
    };
    switch (t) {
      case DType::Q4_0:
      case DType::Q8_0: put(0); break;
      case DType::Q4_K: put(offsetof(BlockQ4_K, d)), put(offsetof(BlockQ4_K, dmin)); break;
      default: put(offsetof(BlockQ6_K, d)); break;
    }
  }
  return w;
}

// Float64 decoding from the layouts: a (step part) and b (min part) per element, w = a - b.
void decode64(DType t, const uint8_t* row, int64_t k, std::vector<double>& a, std::vector<double>& b) {
  a.assign(static_cast<size_t>(k), 0.0);
  b.assign(static_cast<size_t>(k), 0.0);
  if (t == DType::Q4_0 || t == DType::Q8_0) {
    for (int64_t j = 0; j < k / 32; ++j) {
      if (t == DType::Q4_0) {
        const auto& blk = reinterpret_cast<const BlockQ4_0*>(row)[j];
        const double d = f16_to_f32(blk.d);
        for (int i = 0; i < 16; ++i) {
          a[j * 32 + i] = d * ((blk.qs[i] & 15) - 8);
          a[j * 32 + i + 16] = d * ((blk.qs[i] >> 4) - 8);
        }
      } else {
        const auto& blk = reinterpret_cast<const BlockQ8_0*>(row)[j];
        for (int i = 0; i < 32; ++i) a[j * 32 + i] = static_cast<double>(f16_to_f32(blk.d)) * blk.qs[i];
      }
    }
    return;
  }
  for (int64_t s = 0; s < k / 256; ++s) {
    double* ya = a.data() + s * 256;
    double* yb = b.data() + s * 256;
    if (t == DType::Q4_K) {
      const auto& blk = reinterpret_cast<const BlockQ4_K*>(row)[s];
      const double d = f16_to_f32(blk.d), dmin = f16_to_f32(blk.dmin);
      for (int sub = 0; sub < 8; ++sub) {
        int sc, mn;
        const uint8_t* q = blk.scales;
        if (sub < 4) {
          sc = q[sub] & 63, mn = q[sub + 4] & 63;
        } else {
          sc = (q[sub + 4] & 15) | ((q[sub - 4] >> 6) << 4);
          mn = (q[sub + 4] >> 4) | ((q[sub] >> 6) << 4);
        }
        for (int l = 0; l < 32; ++l) {
          const uint8_t byte = blk.qs[32 * (sub / 2) + l];
          ya[sub * 32 + l] = d * sc * (sub % 2 ? byte >> 4 : byte & 15);
          yb[sub * 32 + l] = dmin * mn;
        }
      }
    } else {
      const auto& blk = reinterpret_cast<const BlockQ6_K*>(row)[s];
      const double d = f16_to_f32(blk.d);
      for (int half = 0; half < 2; ++half) {
        const uint8_t* ql = blk.ql + 64 * half;
        const uint8_t* qh = blk.qh + 32 * half;
        const int8_t* sc = blk.scales + 8 * half;
        for (int l = 0; l < 32; ++l) {
          const int is = l / 16;
          const int q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
          const int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
          const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
          const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
          ya[128 * half + l] = d * sc[is] * q1;
          ya[128 * half + l + 32] = d * sc[is + 2] * q2;
          ya[128 * half + l + 64] = d * sc[is + 4] * q3;
          ya[128 * half + l + 96] = d * sc[is + 6] * q4;
        }
      }
    }
  }
}

std::vector<float> random_acts(int64_t count, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(count));
  for (auto& e : v) e = dist(rng);
  if (count >= 64) {
    v[5] = 40.0f;  // an outlier block
    for (int i = 32; i < 64; ++i) v[i] = 0.0f;  // an all-zero block (d = 0)
  }
  return v;
}

std::vector<float> dequantized_acts(const float* x, int64_t k) {
  std::vector<ActBlock> q(static_cast<size_t>(k / kActBlock));
  quantize_act_ref(x, q.data(), k);
  std::vector<float> out(static_cast<size_t>(k));
  dequantize_act(q.data(), out.data(), k);
  return out;
}

bool k_quant(DType t) { return t == DType::Q4_K || t == DType::Q6_K; }

// What the GEMV multiplies by: the q8_K form (one step per 256) for the K formats, else the
// blocks of 32. Also checks that form against x: |x - q·d| ≤ d/2 (+ rounding of x·(1/d)) and the
// sums of each 32.
std::vector<float> gemv_acts(DType t, const float* x, int64_t k) {
  if (!k_quant(t)) return dequantized_acts(x, k);
  ActRow r;
  r.quantize(x, k);
  std::vector<float> out(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) {
    const double d = r.dk[i / 256];
    out[i] = static_cast<float>(r.qk[i]) * r.dk[i / 256];
    EXPECT_LE(std::fabs(x[i] - r.qk[i] * d), d / 2 + 4 * std::ldexp(1.0, -24) * std::fabs(x[i]));
  }
  for (int64_t b = 0; b < k / 32; ++b) {
    int32_t s = 0;
    for (int i = 0; i < 32; ++i) s += r.qk[b * 32 + i];
    EXPECT_EQ(r.bsum[b], s);
  }
  return out;
}

struct Ref {
  double value, bound;
};

Ref reference(const std::vector<double>& a, const std::vector<double>& b, const float* xh, int64_t k, float bias) {
  double v = bias, mag = std::fabs(static_cast<double>(bias));
  for (int64_t i = 0; i < k; ++i) {
    v += (a[i] - b[i]) * xh[i];
    mag += (std::fabs(a[i]) + std::fabs(b[i])) * std::fabs(static_cast<double>(xh[i]));
  }
  return {v, 2.0 * (static_cast<double>(k / 32) + 8) * std::ldexp(1.0, -24) * mag};
}

std::vector<int64_t> ks_for(DType t) {
  if (t == DType::Q4_K || t == DType::Q6_K) return {256, 512};
  return {32, 96, 160, 256};
}

TEST(GemmQuant, Decode64MatchesDequantizeRow) {
  // The test's own decoder agrees with the library's dequantize_row to f32 rounding.
  std::mt19937 rng(1);
  for (DType t : kTypes) {
    const int64_t k = 512;
    const auto w = random_weights(t, 1, k, rng);
    std::vector<double> a, b;
    decode64(t, w.data(), k, a, b);
    std::vector<float> deq(k);
    dequantize_row(t, w.data(), deq.data(), k);
    for (int64_t i = 0; i < k; ++i)
      ASSERT_LE(std::fabs(deq[i] - (a[i] - b[i])), 2 * std::ldexp(1.0, -24) * (std::fabs(a[i]) + std::fabs(b[i])))
          << dtype_name(t) << " i=" << i;
  }
}

TEST(GemmQuant, QuantizeActEqualsTwinOnEveryTargetAndIsWithinHalfAStep) {
  std::mt19937 rng(2);
  const int64_t k = 32 * 9;
  const auto x = random_acts(k, rng);
  std::vector<ActBlock> want(k / 32);
  quantize_act_ref(x.data(), want.data(), k);
  for (int64_t b = 0; b < k / 32; ++b) {
    int s = 0;
    for (int i = 0; i < 32; ++i) {
      const double xi = x[b * 32 + i], d = want[b].d;
      // |x - q·d| ≤ d/2 up to the rounding of x·(1/d) (relative 2u of |x|).
      EXPECT_LE(std::fabs(xi - want[b].qs[i] * d), d / 2 + 4 * std::ldexp(1.0, -24) * std::fabs(xi));
      EXPECT_LE(std::abs(want[b].qs[i]), 127);
      s += want[b].qs[i];
    }
    EXPECT_EQ(want[b].sum, static_cast<float>(s));
  }
  EXPECT_EQ(want[1].d, 0.0f);  // the all-zero block
  testing::for_each_simd_target([&] {
    std::vector<ActBlock> got(k / 32);
    quantize_act(x.data(), got.data(), k);
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(ActBlock)), 0);
  });
}

TEST(GemmQuant, DotMatchesTwinAndFloat64Matmul) {
  std::mt19937 rng(3);
  testing::for_each_simd_target([&] {
    for (DType t : kTypes) {
      for (int64_t k : ks_for(t)) {
        SCOPED_TRACE(k);
        const auto w = random_weights(t, 1, k, rng);
        const auto x = random_acts(k, rng);
        ActRow xa;
        xa.quantize(x.data(), k);
        std::vector<double> a, b;
        decode64(t, w.data(), k, a, b);
        const auto xh = gemv_acts(t, x.data(), k);
        const Ref ref = reference(a, b, xh.data(), k, 0.0f);
        const float got = dot_act_q8(t, w.data(), xa);
        const float twin = k_quant(t) ? dot_act_q8k_ref(t, w.data(), xa) : dot_act_q8_ref(t, w.data(), xa.blocks.data(), k);
        EXPECT_LE(std::fabs(got - ref.value), ref.bound) << dtype_name(t) << " k=" << k;
        EXPECT_LE(std::fabs(twin - ref.value), ref.bound) << dtype_name(t) << " k=" << k;
        EXPECT_LE(std::fabs(got - twin), 2 * ref.bound) << dtype_name(t) << " k=" << k;
        // The GEMM's blocks-of-32 twin against its own float64 reference.
        const auto xh32 = dequantized_acts(x.data(), k);
        const Ref ref32 = reference(a, b, xh32.data(), k, 0.0f);
        EXPECT_LE(std::fabs(dot_act_q8_ref(t, w.data(), xa.blocks.data(), k) - ref32.value), ref32.bound);
      }
    }
  });
}

// GEMM and GEMV on odd shapes at 1 and 2 threads: equal to the twin bit for bit (GEMM), within
// kBound of it (GEMV), and within kBound of the float64 matmul.
void check_shapes(DType t, int64_t m, int64_t n, int64_t k, std::mt19937& rng, bool float64) {
  const auto w = random_weights(t, n, k, rng);
  const auto x = random_acts(m * k, rng);
  std::vector<float> bias(n);
  for (auto& v : bias) v = std::uniform_real_distribution<float>(-1, 1)(rng);
  std::vector<float> want(m * n);
  gemm_quant_ref(t, w.data(), x.data(), bias.data(), want.data(), m, n, k);
  for (int threads : {1, 2}) {
    std::vector<float> got(m * n, NAN);
    gemm_quant(t, w.data(), x.data(), bias.data(), got.data(), m, n, k, threads);
    ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
        << dtype_name(t) << " m=" << m << " n=" << n << " k=" << k << " threads=" << threads;
    std::vector<float> y(n, NAN);
    gemv_act_q8(t, w.data(), x.data(), bias.data(), y.data(), n, k, threads);
    if (!float64) {
      for (int64_t r = 0; r < n; ++r) ASSERT_TRUE(std::isfinite(y[r]));
      continue;
    }
    const int64_t rb = dtype_bytes_for(t, k);
    std::vector<double> a, b;
    for (int64_t r = 0; r < n; r += (n > 64 ? 37 : 1)) {
      decode64(t, w.data() + r * rb, k, a, b);
      for (int64_t i = 0; i < m; i += (m > 8 ? 7 : 1)) {
        const auto xh = dequantized_acts(x.data() + i * k, k);
        const Ref ref = reference(a, b, xh.data(), k, bias[r]);
        ASSERT_LE(std::fabs(got[i * n + r] - ref.value), ref.bound) << dtype_name(t) << " row " << i << " col " << r;
        if (i == 0) {
          const auto xg = gemv_acts(t, x.data(), k);
          const Ref rg = reference(a, b, xg.data(), k, bias[r]);
          ASSERT_LE(std::fabs(y[r] - rg.value), rg.bound) << dtype_name(t) << " gemv col " << r;
        }
      }
    }
  }
}

TEST(GemmQuant, GemmEqualsTwinOnEveryTarget) {
  std::mt19937 rng(4);
  testing::for_each_simd_target([&] {
    for (DType t : kTypes)
      for (int64_t k : ks_for(t))
        for (auto [m, n] : {std::pair<int64_t, int64_t>{1, 1}, {1, 33}, {33, 1}, {33, 33}, {9, 7}})
          check_shapes(t, m, n, k, rng, true);
  });
}

TEST(GemmQuant, OddShapesAtOneAndTwoThreads) {
  std::mt19937 rng(5);
  for (DType t : kTypes)
    for (int64_t k : ks_for(t))
      for (int64_t m : {1, 33, 172})
        for (int64_t n : {1, 33, 4097}) {
          if (m * n * k > int64_t{200} << 20) continue;  // the scalar twin's time: 172×4097×512 skipped
          check_shapes(t, m, n, k, rng, true);
        }
}

TEST(GemmQuant, BadInput) {
  std::vector<float> x(64), y(4);
  std::vector<uint8_t> w(1024);
  EXPECT_THROW(gemm_quant(DType::Q5_1, w.data(), x.data(), nullptr, y.data(), 1, 1, 32), InputError);
  EXPECT_THROW(gemm_quant(DType::Q4_K, w.data(), x.data(), nullptr, y.data(), 1, 1, 64), InputError);
  EXPECT_THROW(gemv_act_q8(DType::F32, w.data(), x.data(), nullptr, y.data(), 1, 32), InputError);
  EXPECT_FALSE(act_q8_supports(DType::Q5_0));
  EXPECT_TRUE(act_q8_supports(DType::Q6_K));
}

}  // namespace
}  // namespace llmopt::kernels
