// Row-interleaved Q4_0 / Q4_K (repack.h).
//
// Oracles:
// (a) the layout is a bijection: repack → unpack_rows gives the original bytes (random bytes,
//     so every scale/min bit pattern of Q4_K's 12-byte packing is exercised);
// (b) gemv_repacked_rows equals, bit for bit, the scalar formulas of gemm_quant.h evaluated on
//     the ORIGINAL rows (dot_act_q8_ref for Q4_0, dot_act_q8k_ref for Q4_K), on every SIMD target
//     and at 1 and 2 threads: each lane is one row's sequential chain of one fma per (super-)block
//     with exact integer block sums, the same operations in the same order;
// (c) a float64 matmul of the weights decoded by dequantize_row (an independent decoder) with the
//     ORIGINAL f32 activations. The kernel quantizes x to int8 with one step d_x per 32 (Q4_0) or
//     per 256 (Q4_K, the q8_K form), so |x_i - x̂_i| ≤ d_x/2 and the activation rounding moves the
//     product by at most E_act = Σ_i |w_i|·d_x(i)/2. The float arithmetic adds at most
//     (nb + 8)·u·M (u = 2^-24, M = |bias| + Σ_i (|a_i| + |b_i|)·|x̂_i| with w_i = a_i - b_i, b_i
//     Q4_K's min part, 0 ≤ b_i ≤ 63·|dmin|; see gemm_quant_test.cpp), with |x̂_i| ≤ |x_i| + d_x/2
//     and |a_i| + |b_i| ≤ |w_i| + 2·63·|dmin|. Tolerance: E_act + 2·(nb + 8)·u·M.
#include "kernels/repack.h"

#include <gtest/gtest.h>

#include <algorithm>
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

const DType kTypes[] = {DType::Q4_0, DType::Q4_K};

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
    if (t == DType::Q4_0) {
      put(0);
    } else {
      put(offsetof(BlockQ4_K, d)), put(offsetof(BlockQ4_K, dmin));
    }
  }
  return w;
}

std::vector<float> random_acts(int64_t k, std::mt19937& rng) {
  std::vector<float> x(static_cast<size_t>(k));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& v : x) v = nd(rng);
  // A few outliers, as real activations have: they set the int8 steps of their blocks.
  for (int64_t i = 0; i < k; i += 97) x[static_cast<size_t>(i)] *= 20.0f;
  return x;
}

std::vector<int64_t> ks_for(DType t) {
  if (t == DType::Q4_0) return {32, 96, 768, 2080};
  return {256, 768, 2048};
}

TEST(Repack, RoundTripIsTheIdentity) {
  std::mt19937 rng(1);
  for (DType t : kTypes)
    for (int64_t k : ks_for(t))
      for (int64_t n : {8, 16, 40}) {
        const auto w = random_weights(t, n, k, rng);
        std::vector<uint8_t> packed(static_cast<size_t>(repacked_bytes(t, n, k)));
        repack_rows(t, w.data(), packed.data(), n, k);
        std::vector<uint8_t> back(w.size(), 0xAB);
        unpack_rows(t, packed.data(), k, 0, n, back.data());
        ASSERT_EQ(back, w) << dtype_name(t) << " n=" << n << " k=" << k;
        // A range that starts inside a group.
        const int64_t rb = dtype_bytes_for(t, k);
        std::vector<uint8_t> part(static_cast<size_t>(3 * rb));
        unpack_rows(t, packed.data(), k, n - 5, n - 2, part.data());
        ASSERT_EQ(std::memcmp(part.data(), w.data() + (n - 5) * rb, part.size()), 0);
      }
  EXPECT_EQ(repacked_bytes(DType::Q4_0, 16, 64), 16 * 2 * 18);
  EXPECT_EQ(repacked_bytes(DType::Q4_K, 16, 512), 2 * 2 * 1184);
}

// Scalar formulas on the original rows (b).
std::vector<float> twin_on_original(DType t, const std::vector<uint8_t>& w, const ActRow& xa, const float* bias,
                                    int64_t n, int64_t k) {
  const int64_t rb = dtype_bytes_for(t, k);
  std::vector<float> y(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    const float v = t == DType::Q4_0 ? dot_act_q8_ref(t, w.data() + r * rb, xa.blocks.data(), k)
                                     : dot_act_q8k_ref(t, w.data() + r * rb, xa);
    y[static_cast<size_t>(r)] = bias ? v + bias[r] : v;
  }
  return y;
}

TEST(Repack, GemvEqualsTwinOnOriginalRowsOnEveryTarget) {
  std::mt19937 rng(2);
  testing::for_each_simd_target([&] {
    for (DType t : kTypes)
      for (int64_t k : ks_for(t))
        for (int64_t n : {8, 24, 64}) {
          const auto w = random_weights(t, n, k, rng);
          std::vector<uint8_t> packed(static_cast<size_t>(repacked_bytes(t, n, k)));
          repack_rows(t, w.data(), packed.data(), n, k);
          const auto x = random_acts(k, rng);
          std::vector<float> bias(static_cast<size_t>(n));
          for (auto& v : bias) v = std::uniform_real_distribution<float>(-1, 1)(rng);
          ActRow xa;
          xa.quantize(x.data(), k);
          for (const float* b : {static_cast<const float*>(nullptr), static_cast<const float*>(bias.data())}) {
            const auto want = twin_on_original(t, w, xa, b, n, k);
            std::vector<float> got(static_cast<size_t>(n), NAN), ref(static_cast<size_t>(n), NAN);
            gemv_repacked_rows(t, packed.data(), xa, b, got.data(), 0, n);
            gemv_repacked_rows_ref(t, packed.data(), xa, b, ref.data(), 0, n);
            ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
                << dtype_name(t) << " n=" << n << " k=" << k;
            ASSERT_EQ(std::memcmp(ref.data(), want.data(), ref.size() * sizeof(float)), 0);
            // Rows in pieces (what the decode step's row slabs do).
            std::vector<float> pieces(static_cast<size_t>(n), NAN);
            for (int64_t r0 = 0; r0 < n; r0 += 16)
              gemv_repacked_rows(t, packed.data(), xa, b, pieces.data(), r0, std::min(n, r0 + 16));
            ASSERT_EQ(std::memcmp(pieces.data(), want.data(), got.size() * sizeof(float)), 0);
          }
        }
  });
}

TEST(Repack, GemvWithinActivationRoundingOfFloat64MatmulAtOneAndTwoThreads) {
  std::mt19937 rng(3);
  const double u = std::ldexp(1.0, -24);
  for (DType t : kTypes)
    for (int64_t k : ks_for(t))
      for (int64_t n : {8, 168, 4096}) {
        const auto w = random_weights(t, n, k, rng);
        std::vector<uint8_t> packed(static_cast<size_t>(repacked_bytes(t, n, k)));
        repack_rows(t, w.data(), packed.data(), n, k);
        const auto x = random_acts(k, rng);
        std::vector<float> bias(static_cast<size_t>(n));
        for (auto& v : bias) v = std::uniform_real_distribution<float>(-1, 1)(rng);
        std::vector<float> y1(static_cast<size_t>(n), NAN), y2(static_cast<size_t>(n), NAN);
        gemv_repacked(t, packed.data(), x.data(), bias.data(), y1.data(), n, k, 1);
        gemv_repacked(t, packed.data(), x.data(), bias.data(), y2.data(), n, k, 2);
        ASSERT_EQ(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)), 0) << "thread count changed the result";
        // Activation steps as the kernel takes them: max|x|/127 per 32 (Q4_0) or per 256 (Q4_K).
        const int64_t span = t == DType::Q4_0 ? 32 : 256;
        std::vector<double> dx(static_cast<size_t>(k / span));
        for (int64_t s = 0; s < k / span; ++s) {
          float amax = 0.0f;
          for (int64_t i = s * span; i < (s + 1) * span; ++i) amax = std::max(amax, std::fabs(x[i]));
          dx[static_cast<size_t>(s)] = static_cast<double>(amax / 127.0f);
        }
        const int64_t rb = dtype_bytes_for(t, k), nb = k / 32;
        std::vector<float> row(static_cast<size_t>(k));
        for (int64_t r = 0; r < n; r += (n > 64 ? 37 : 1)) {
          dequantize_row(t, w.data() + r * rb, row.data(), k);
          double exact = bias[r], e_act = 0.0, mag = std::fabs(bias[r]);
          for (int64_t i = 0; i < k; ++i) {
            const double wi = row[i], d = dx[static_cast<size_t>(i / span)];
            double bmax = 0.0;  // bound of Q4_K's min part in this super-block
            if (t == DType::Q4_K) {
              const auto& blk = reinterpret_cast<const BlockQ4_K*>(w.data() + r * rb)[i / 256];
              bmax = 63.0 * std::fabs(f16_to_f32(blk.dmin));
            }
            exact += wi * x[i];
            e_act += std::fabs(wi) * d / 2;
            mag += (std::fabs(wi) + 2 * bmax) * (std::fabs(x[i]) + d / 2);
          }
          const double tol = e_act + 2 * static_cast<double>(nb + 8) * u * mag;
          ASSERT_LE(std::fabs(y1[r] - exact), tol) << dtype_name(t) << " n=" << n << " k=" << k << " row " << r;
        }
      }
}

TEST(Repack, PackedGemmEqualsGemmOnBlocks) {
  std::mt19937 rng(4);
  for (DType t : kTypes)
    for (int64_t k : ks_for(t))
      for (auto [m, n] : {std::pair<int64_t, int64_t>{1, 8}, {9, 40}, {33, 96}}) {
        const auto w = random_weights(t, n, k, rng);
        std::vector<uint8_t> packed(static_cast<size_t>(repacked_bytes(t, n, k)));
        repack_rows(t, w.data(), packed.data(), n, k);
        std::vector<float> x(static_cast<size_t>(m * k));
        for (int64_t i = 0; i < m; ++i) {
          const auto r = random_acts(k, rng);
          std::copy(r.begin(), r.end(), x.begin() + i * k);
        }
        std::vector<float> want(static_cast<size_t>(m * n)), got(static_cast<size_t>(m * n), NAN);
        gemm_quant_ref(t, w.data(), x.data(), nullptr, want.data(), m, n, k);
        for (int threads : {1, 2}) {
          gemm_quant(t, packed.data(), x.data(), nullptr, got.data(), m, n, k, threads, true);
          ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
              << dtype_name(t) << " m=" << m << " n=" << n << " k=" << k;
        }
      }
}

TEST(Repack, BadInput) {
  std::vector<uint8_t> w(4096), out(8192);
  std::vector<float> x(256), y(16);
  EXPECT_FALSE(repack_supports(DType::Q8_0, 8, 32));
  EXPECT_FALSE(repack_supports(DType::Q4_0, 12, 32));  // not a multiple of 8 rows
  EXPECT_FALSE(repack_supports(DType::Q4_K, 8, 128));  // not whole super-blocks
  EXPECT_THROW(repack_rows(DType::Q4_0, w.data(), out.data(), 12, 32), InputError);
  EXPECT_THROW(repack_rows(DType::Q6_K, w.data(), out.data(), 8, 256), InputError);
  EXPECT_THROW(gemv_repacked(DType::Q4_0, w.data(), x.data(), nullptr, y.data(), 4, 32), InputError);
  EXPECT_THROW(gemm_quant(DType::Q4_0, w.data(), x.data(), nullptr, y.data(), 1, 12, 32, 1, true), InputError);
}

}  // namespace
}  // namespace llmopt::kernels
