// Quantized GEMV (Q8_0, Q5_0, Q4_0 weights, f32 activations) against (a) its blockwise scalar
// twin and (b) the ordinary f32 matmul on the dequantized weights (gemv_ref), on every SIMD target.
//
// Tolerance (kDotBound): decoded weights q·d are exact in f32 (≤ 8-bit code × 11-bit f16 step),
// so every variant approximates the same exact S = bias + Σ w_i·x_i. Each rounds any term at most
// k + 8 times (products, the 32-term block sum, the scaling by d, the k/32-term row sum, a
// log2(16)-level lane reduction, the bias), so each is within (k+8)·u·(|bias| + Σ|w_i·x_i|)
// of S (Higham §3.1, u = 2^-24), and two of them differ by at most twice that.
#include "kernels/gemv_quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "each_simd_target.h"
#include "kernels/gemv.h"
#include "kernels/quant_formats.h"

namespace llmopt::kernels {
namespace {

struct QuantWeights {
  std::vector<uint8_t> blocks;
  std::vector<float> decoded;  // exact f32 values of the quantized weights
};

QuantWeights make_weights(DType type, int64_t n, int64_t k, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> src(n * k);
  for (auto& v : src) v = dist(rng);
  QuantWeights w;
  w.blocks.resize(dtype_bytes_for(type, n * k));
  w.decoded.resize(n * k);
  quantize_row_ref(type, src.data(), w.blocks.data(), n * k);
  dequantize_row(type, w.blocks.data(), w.decoded.data(), n * k);
  return w;
}

std::vector<float> random_floats(int64_t count, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(count);
  for (auto& e : v) e = dist(rng);
  return v;
}

double dot_bound(const float* w_row, const float* x, float bias, int64_t k) {
  double abs_sum = std::fabs(static_cast<double>(bias));
  for (int64_t i = 0; i < k; ++i) abs_sum += std::fabs(static_cast<double>(w_row[i]) * x[i]);
  return 2.0 * (static_cast<double>(k) + 8) * std::ldexp(1.0, -24) * abs_sum;
}

const DType kQuantTypes[] = {DType::Q8_0, DType::Q5_0, DType::Q4_0};

TEST(GemvQuant, DotMatchesBlockwiseTwinWithinDotBound) {
  std::mt19937 rng(21);
  testing::for_each_simd_target([&] {
    for (DType type : kQuantTypes) {
      for (int64_t blocks : {1, 3, 5, 24, 33, 64}) {
        const int64_t k = blocks * kQK;
        const auto w = make_weights(type, 1, k, rng);
        const auto x = random_floats(k, rng);
        const float got = dot_quant(type, w.blocks.data(), x.data(), k);
        const float want = dot_quant_ref(type, w.blocks.data(), x.data(), k);
        EXPECT_LE(std::fabs(static_cast<double>(got) - want),
                  dot_bound(w.decoded.data(), x.data(), 0.0f, k))
            << dtype_name(type) << " k=" << k;
      }
    }
  });
}

// Small integers make every variant exact: Q8_0 block with d = 1 and codes 1..32 against x = 1.
TEST(GemvQuant, KnownSmallDot) {
  BlockQ8_0 q8[2]{};
  BlockQ4_0 q4[2]{};
  for (int b = 0; b < 2; ++b) {
    q8[b].d = 0x3c00;  // 1.0
    q4[b].d = 0x4000;  // 2.0
    for (int j = 0; j < 32; ++j) q8[b].qs[j] = static_cast<int8_t>(j + 1);
    for (int j = 0; j < 16; ++j) q4[b].qs[j] = 0x9a;  // low 10 -> +2, high 9 -> +1
  }
  // Q5_0 with d = 0.5: nibbles 3 (low) and 12 (high); qh sets the 5th bit of elements 0..7
  // (bits 0-7) and 16..23 (bits 16-23): codes 19, 3, 28, 12 for 8 elements each, minus 16.
  BlockQ5_0 q5[2]{};
  for (int b = 0; b < 2; ++b) {
    q5[b].d = 0x3800;
    q5[b].qh[0] = 0xff;
    q5[b].qh[2] = 0xff;
    for (int j = 0; j < 16; ++j) q5[b].qs[j] = 0xc3;
  }
  std::vector<float> x(64, 1.0f);
  EXPECT_EQ(dot_quant(DType::Q8_0, q8, x.data(), 64), 2 * 528.0f);  // 2·(1 + ... + 32)
  EXPECT_EQ(dot_quant(DType::Q4_0, q4, x.data(), 64), 2 * 2.0f * (16 * 2 + 16 * 1));
  EXPECT_EQ(dot_quant(DType::Q5_0, q5, x.data(), 64), 2 * 0.5f * 8 * (3 - 13 + 12 - 4));
}

// Block scales across the f16 range (subnormal, negative, largest finite) decode exactly as
// core/half.h does: small integer codes against x = 1 keep every sum exact.
TEST(GemvQuant, ScalesDecodeExactlyOverTheHalfRange) {
  testing::for_each_simd_target([&] {
    for (uint16_t d : {0x0001, 0x03ff, 0x0400, 0x8400, 0x3555, 0x7bff, 0xfbff}) {
      BlockQ8_0 q8[3]{};
      int code_sum = 0;
      for (int b = 0; b < 3; ++b) {
        q8[b].d = d;
        for (int j = 0; j < 32; ++j) {
          q8[b].qs[j] = static_cast<int8_t>((j % 5) - 2 + b);
          code_sum += q8[b].qs[j];
        }
      }
      std::vector<float> x(96, 1.0f);
      EXPECT_EQ(dot_quant(DType::Q8_0, q8, x.data(), 96), f16_to_f32(d) * code_sum)
          << "d=0x" << std::hex << d;
    }
  });
}

TEST(GemvQuant, GemvMatchesDequantizedMatmulWithinDotBound) {
  std::mt19937 rng(22);
  testing::for_each_simd_target([&] {
    for (DType type : kQuantTypes) {
      for (int64_t n : {1, 7, 33, 172}) {
        for (int64_t blocks : {1, 3, 33}) {
          const int64_t k = blocks * kQK;
          const auto w = make_weights(type, n, k, rng);
          const auto x = random_floats(k, rng);
          const auto bias = random_floats(n, rng);
          for (bool with_bias : {false, true}) {
            const float* b = with_bias ? bias.data() : nullptr;
            std::vector<float> got(n), want(n);
            gemv(type, w.blocks.data(), x.data(), b, got.data(), n, k);
            gemv_ref(type, w.blocks.data(), x.data(), b, want.data(), n, k);
            for (int64_t r = 0; r < n; ++r)
              ASSERT_LE(std::fabs(static_cast<double>(got[r]) - want[r]),
                        dot_bound(w.decoded.data() + r * k, x.data(), b ? b[r] : 0.0f, k))
                  << dtype_name(type) << " n=" << n << " k=" << k << " r=" << r;
          }
        }
      }
    }
  });
}

TEST(GemvQuant, BatchMatchesDequantizedMatmulWithinDotBound) {
  std::mt19937 rng(23);
  for (DType type : kQuantTypes) {
    for (int64_t m = 1; m <= kMaxGemvBatch; ++m) {
      const int64_t n = 37, k = 5 * kQK;
      const auto w = make_weights(type, n, k, rng);
      const auto x = random_floats(m * k, rng);
      const auto bias = random_floats(n, rng);
      std::vector<float> got(m * n), want(m * n);
      gemv_batch(type, w.blocks.data(), x.data(), bias.data(), got.data(), m, n, k);
      gemv_batch_ref(type, w.blocks.data(), x.data(), bias.data(), want.data(), m, n, k);
      for (int64_t b = 0; b < m; ++b)
        for (int64_t r = 0; r < n; ++r)
          ASSERT_LE(std::fabs(static_cast<double>(got[b * n + r]) - want[b * n + r]),
                    dot_bound(w.decoded.data() + r * k, x.data() + b * k, bias[r], k))
              << dtype_name(type) << " m=" << m << " b=" << b << " r=" << r;
    }
  }
}

TEST(GemvQuant, BitIdenticalAcrossThreadCounts) {
  std::mt19937 rng(24);
  for (DType type : kQuantTypes) {
    const int64_t n = 1001, k = 24 * kQK;
    const auto w = make_weights(type, n, k, rng);
    const auto x = random_floats(k, rng);
    std::vector<float> one(n), many(n);
    gemv(type, w.blocks.data(), x.data(), nullptr, one.data(), n, k, 1);
    for (int threads : {2, 3, 5}) {
      gemv(type, w.blocks.data(), x.data(), nullptr, many.data(), n, k, threads);
      ASSERT_EQ(0, std::memcmp(one.data(), many.data(), n * sizeof(float)))
          << dtype_name(type) << " threads=" << threads;
    }
  }
}

// Blocks of any format in the traits table: the reference quantizer where there is one, else
// random bytes with the f16 (f32 for Q8_K) scale fields set to small finite values, so every
// decoded weight is finite. Offsets of the scale fields are those of the structs in
// quant_formats.h.
std::vector<uint8_t> any_format_weights(const QuantTraits& traits, int64_t count,
                                        std::mt19937& rng) {
  std::vector<uint8_t> bytes(count / traits.block_elems * traits.block_bytes);
  if (traits.quantize_ref) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> src(count);
    for (auto& v : src) v = dist(rng);
    traits.quantize_ref(src.data(), bytes.data(), count);
    return bytes;
  }
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  std::vector<int> half_offsets;
  switch (traits.type) {
    case DType::Q2_K: half_offsets = {80, 82}; break;
    case DType::Q3_K: half_offsets = {108}; break;
    case DType::Q4_K:
    case DType::Q5_K: half_offsets = {0, 2}; break;
    case DType::Q6_K: half_offsets = {208}; break;
    default: break;
  }
  for (int64_t off = 0; off < static_cast<int64_t>(bytes.size()); off += traits.block_bytes) {
    for (int h : half_offsets) {
      const uint16_t scale = f32_to_f16(std::ldexp(1.0f + (rng() % 100) / 100.0f, -6));
      std::memcpy(bytes.data() + off + h, &scale, 2);
    }
    if (traits.type == DType::Q8_K) {
      const float scale = std::ldexp(1.0f + (rng() % 100) / 100.0f, -8);
      std::memcpy(bytes.data() + off, &scale, 4);
    }
  }
  return bytes;
}

TEST(GemvQuant, EveryBlockFormatMatchesDequantizedMatmulAndIgnoresThreadCount) {
  std::mt19937 rng(25);
  for (const QuantTraits& traits : quant_traits_table()) {
    SCOPED_TRACE(dtype_name(traits.type));
    ASSERT_TRUE(gemv_supports(traits.type));
    const int64_t n = 37, k = 512, m = 3;
    const auto w = any_format_weights(traits, n * k, rng);
    std::vector<float> decoded(n * k);
    dequantize_row(traits.type, w.data(), decoded.data(), n * k);
    const auto x = random_floats(m * k, rng);
    const auto bias = random_floats(n, rng);
    std::vector<float> got(n), want(n), threaded(n);
    gemv(traits.type, w.data(), x.data(), bias.data(), got.data(), n, k, 1);
    gemv(traits.type, w.data(), x.data(), bias.data(), threaded.data(), n, k, 3);
    gemv_ref(traits.type, w.data(), x.data(), bias.data(), want.data(), n, k);
    EXPECT_EQ(0, std::memcmp(got.data(), threaded.data(), n * sizeof(float)));
    for (int64_t r = 0; r < n; ++r)
      ASSERT_LE(std::fabs(static_cast<double>(got[r]) - want[r]),
                dot_bound(decoded.data() + r * k, x.data(), bias[r], k))
          << "r=" << r;
    std::vector<float> batch(m * n), batch_want(m * n);
    gemv_batch(traits.type, w.data(), x.data(), bias.data(), batch.data(), m, n, k, 2);
    gemv_batch_ref(traits.type, w.data(), x.data(), bias.data(), batch_want.data(), m, n, k);
    for (int64_t b = 0; b < m; ++b)
      for (int64_t r = 0; r < n; ++r)
        ASSERT_LE(std::fabs(static_cast<double>(batch[b * n + r]) - batch_want[b * n + r]),
                  dot_bound(decoded.data() + r * k, x.data() + b * k, bias[r], k))
            << "b=" << b << " r=" << r;
  }
}

TEST(GemvQuant, RejectsPartialBlocks) {
  std::vector<uint8_t> w(1000);
  std::vector<float> x(100), y(4);
  EXPECT_THROW(gemv(DType::Q8_0, w.data(), x.data(), nullptr, y.data(), 2, 48), InputError);
  EXPECT_THROW(gemv_batch(DType::Q4_0, w.data(), x.data(), nullptr, y.data(), 2, 2, 40),
               InputError);
  EXPECT_THROW(gemv(DType::Q6_K, w.data(), x.data(), nullptr, y.data(), 1, 96), InputError);
  EXPECT_TRUE(gemv_supports(DType::Q8_0));
  EXPECT_TRUE(gemv_supports(DType::Q4_K));
  EXPECT_FALSE(gemv_supports(DType::I8));
}

}  // namespace
}  // namespace llmopt::kernels
