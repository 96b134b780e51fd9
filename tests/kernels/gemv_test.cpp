// GEMV against its scalar twin over odd sizes, on every SIMD target, for F32/F16/BF16 weights.
//
// Tolerance (named kDotBound below): both kernels compute S = bias + Σ_i w_i·x_i in f32 with
// at most k+2 roundings on any term's path (product, k-1 additions, reduction tree ≤ log2 of
// the lane count extra levels, bias), so each is within γ·(|bias| + Σ|w_i·x_i|) of the exact
// value with γ = (k+2+log2(64))·u, u = 2^-24 (Higham, Accuracy and Stability, §3.1; FMA only
// removes roundings). Their difference is bounded by twice that.
#include "kernels/gemv.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "each_simd_target.h"

namespace llmopt::kernels {
namespace {

constexpr double kUnitRoundoff = 1.0 / (1 << 24);

// Weights of the requested storage type, plus their exact f32 values.
struct Weights {
  DType type;
  std::vector<float> f32;      // the values the kernels see after conversion
  std::vector<uint16_t> bits;  // F16/BF16 storage
  const void* data() const { return type == DType::F32 ? static_cast<const void*>(f32.data())
                                                       : static_cast<const void*>(bits.data()); }
};

Weights make_weights(DType type, int64_t count, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Weights w{type, std::vector<float>(count), {}};
  if (type != DType::F32) w.bits.resize(count);
  for (int64_t i = 0; i < count; ++i) {
    const float v = dist(rng);
    if (type == DType::F16) {
      w.bits[i] = f32_to_f16(v);
      w.f32[i] = f16_to_f32(w.bits[i]);
    } else if (type == DType::BF16) {
      w.bits[i] = f32_to_bf16(v);
      w.f32[i] = bf16_to_f32(w.bits[i]);
    } else {
      w.f32[i] = v;
    }
  }
  return w;
}

std::vector<float> random_floats(int64_t count, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(count);
  for (auto& e : v) e = dist(rng);
  return v;
}

// kDotBound for one output: 2·γ·(|bias| + Σ|w_i·x_i|), see the file comment.
double dot_bound(const float* w_row, const float* x, float bias, int64_t k) {
  double abs_sum = std::fabs(static_cast<double>(bias));
  for (int64_t i = 0; i < k; ++i) abs_sum += std::fabs(static_cast<double>(w_row[i]) * x[i]);
  return 2.0 * (static_cast<double>(k) + 2 + 6) * kUnitRoundoff * abs_sum;
}

const DType kTypes[] = {DType::F32, DType::F16, DType::BF16};
const int64_t kSizes[] = {1, 7, 33, 172, 1000};

TEST(Gemv, MatchesScalarTwinWithinDotBound) {
  std::mt19937 rng(7);
  testing::for_each_simd_target([&] {
    for (DType type : kTypes) {
      for (int64_t n : kSizes) {
        for (int64_t k : kSizes) {
          const Weights w = make_weights(type, n * k, rng);
          const auto x = random_floats(k, rng);
          const auto bias = random_floats(n, rng);
          for (bool with_bias : {false, true}) {
            const float* b = with_bias ? bias.data() : nullptr;
            std::vector<float> got(n + 1, 123.0f), want(n);
            gemv(type, w.data(), x.data(), b, got.data(), n, k);
            gemv_ref(type, w.data(), x.data(), b, want.data(), n, k);
            EXPECT_EQ(got[n], 123.0f) << "wrote past y[n-1]";
            for (int64_t r = 0; r < n; ++r) {
              const double bound =
                  dot_bound(w.f32.data() + r * k, x.data(), with_bias ? bias[r] : 0.0f, k);
              ASSERT_LE(std::fabs(static_cast<double>(got[r]) - want[r]), bound)
                  << dtype_name(type) << " n=" << n << " k=" << k << " r=" << r
                  << " bias=" << with_bias;
            }
          }
        }
      }
    }
  });
}

// Hand-computed values (small integers: every step is exact in f32 whatever the order).
TEST(Gemv, KnownSmallProduct) {
  const float w[] = {1, 2, 3, 4, 5, 6};  // 2×3
  const float x[] = {1, -1, 2};
  const float bias[] = {10, 20};
  float y[2];
  gemv(DType::F32, w, x, bias, y, 2, 3);
  EXPECT_EQ(y[0], 10 + 1 - 2 + 6);
  EXPECT_EQ(y[1], 20 + 4 - 5 + 12);
  const uint16_t wh[] = {f32_to_f16(1), f32_to_f16(2), f32_to_f16(3),
                         f32_to_f16(4), f32_to_f16(5), f32_to_f16(6)};
  gemv(DType::F16, wh, x, nullptr, y, 2, 3);
  EXPECT_EQ(y[0], 5);
  EXPECT_EQ(y[1], 11);
}

// Each row is reduced by one thread in a fixed order, so y is bit-identical for any thread count.
TEST(Gemv, BitIdenticalAcrossThreadCounts) {
  std::mt19937 rng(11);
  for (DType type : kTypes) {
    const int64_t n = 1003, k = 777;
    const Weights w = make_weights(type, n * k, rng);
    const auto x = random_floats(k, rng);
    const auto bias = random_floats(n, rng);
    std::vector<float> one(n);
    gemv(type, w.data(), x.data(), bias.data(), one.data(), n, k, 1);
    for (int threads : {2, 3, 4, 7}) {
      std::vector<float> many(n);
      gemv(type, w.data(), x.data(), bias.data(), many.data(), n, k, threads);
      ASSERT_EQ(0, std::memcmp(one.data(), many.data(), n * sizeof(float)))
          << dtype_name(type) << " threads=" << threads;
    }
    for (int64_t m : {3, 8}) {
      const auto xs = random_floats(m * k, rng);
      std::vector<float> y1(m * n), y4(m * n);
      gemv_batch(type, w.data(), xs.data(), bias.data(), y1.data(), m, n, k, 1);
      gemv_batch(type, w.data(), xs.data(), bias.data(), y4.data(), m, n, k, 4);
      ASSERT_EQ(0, std::memcmp(y1.data(), y4.data(), y1.size() * sizeof(float)))
          << dtype_name(type) << " batch m=" << m;
    }
  }
}

// gemv_rows over arbitrary row splits reproduces gemv bit for bit (the fused decode step relies
// on it for thread-count independence).
TEST(Gemv, RowRangesReproduceGemv) {
  std::mt19937 rng(12);
  for (DType type : kTypes) {
    const int64_t n = 301, k = 96;
    const Weights w = make_weights(type, n * k, rng);
    const auto x = random_floats(k, rng);
    const auto bias = random_floats(n, rng);
    std::vector<float> whole(n), parts(n, -1.0f);
    gemv(type, w.data(), x.data(), bias.data(), whole.data(), n, k, 1);
    for (int64_t r0 : {0, 5, 17, 160, 300}) {
      const int64_t r1 = std::min<int64_t>(n, r0 + 141);
      std::fill(parts.begin(), parts.end(), -1.0f);
      gemv_rows(type, w.data(), x.data(), bias.data(), parts.data(), r0, r1, k);
      ASSERT_EQ(0, std::memcmp(whole.data() + r0, parts.data() + r0, (r1 - r0) * sizeof(float)))
          << dtype_name(type) << " rows " << r0 << ".." << r1;
      if (r0 > 0) EXPECT_EQ(parts[r0 - 1], -1.0f) << "wrote outside its rows";
      if (r1 < n) EXPECT_EQ(parts[r1], -1.0f) << "wrote outside its rows";
    }
  }
}

TEST(GemvBatch, MatchesScalarTwinWithinDotBound) {
  std::mt19937 rng(13);
  testing::for_each_simd_target([&] {
    for (DType type : kTypes) {
      for (int64_t m = 1; m <= kMaxGemvBatch; ++m) {
        for (int64_t n : {1, 7, 33}) {
          for (int64_t k : {1, 7, 33, 172, 1000}) {
            const Weights w = make_weights(type, n * k, rng);
            const auto x = random_floats(m * k, rng);
            const auto bias = random_floats(n, rng);
            std::vector<float> got(m * n), want(m * n);
            gemv_batch(type, w.data(), x.data(), bias.data(), got.data(), m, n, k);
            gemv_batch_ref(type, w.data(), x.data(), bias.data(), want.data(), m, n, k);
            for (int64_t b = 0; b < m; ++b) {
              for (int64_t r = 0; r < n; ++r) {
                const double bound = dot_bound(w.f32.data() + r * k, x.data() + b * k, bias[r], k);
                ASSERT_LE(std::fabs(static_cast<double>(got[b * n + r]) - want[b * n + r]), bound)
                    << dtype_name(type) << " m=" << m << " n=" << n << " k=" << k << " b=" << b
                    << " r=" << r;
              }
            }
          }
        }
      }
    }
  });
}

TEST(Gemv, RejectsBadArguments) {
  float w[4] = {}, x[2] = {}, y[2];
  EXPECT_THROW(gemv(DType::I32, w, x, nullptr, y, 2, 2), InputError);
  EXPECT_THROW(gemv(DType::F32, w, x, nullptr, y, -1, 2), InputError);
  EXPECT_THROW(gemv_batch(DType::F32, w, x, nullptr, y, 9, 1, 2), InputError);
  EXPECT_THROW(gemv_batch(DType::F32, w, x, nullptr, y, 0, 1, 2), InputError);
  EXPECT_FALSE(gemv_supports(DType::I8));
}

}  // namespace
}  // namespace llmopt::kernels
