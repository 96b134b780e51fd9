// vec_math primitives on every SIMD target and their scalar twins, against float64 computed here.
// Tolerances (u = 2^-24):
// - dot, rms sum of squares: a float sum of n products is within (n + 6)·u·Σ|a_i·b_i| of the
//   exact one (Higham §4.2, plus log2(lanes) tree levels; one more u per product).
// - exp: Highway's Exp and libm's expf are within a few ulp; we allow 4 u relative per value.
// - softmax: each output is e_i / Σe: exp's 4 u, the sum's (n + 6) u, the division's u, and the
//   rounding of the argument x_i - max (|x_i - max|·u relative after exp).
// - silu·u: exp's 4 u relative error in 1 + e^-g is at most 4 u of the quotient, + 3 roundings.
#include "kernels/vec_math.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "each_simd_target.h"

namespace llmopt::kernels {
namespace {

const double u = std::ldexp(1.0, -24);
const int64_t kSizes[] = {1, 3, 8, 17, 64, 100, 255, 1031};

std::vector<float> randv(std::mt19937& rng, int64_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(VecMath, DotAndAxpyWithinSummationBound) {
  std::mt19937 rng(1);
  testing::for_each_simd_target([&] {
    for (int64_t n : kSizes) {
      auto a = randv(rng, n, -2, 2), b = randv(rng, n, -2, 2);
      double exact = 0, mag = 0;
      for (int64_t i = 0; i < n; ++i) exact += double(a[i]) * b[i], mag += std::fabs(double(a[i]) * b[i]);
      const double bound = (n + 7) * u * mag;
      EXPECT_NEAR(dot_f32(a.data(), b.data(), n), exact, bound) << n;
      EXPECT_NEAR(dot_f32_ref(a.data(), b.data(), n), exact, bound) << n;
      auto y = randv(rng, n, -1, 1), y2 = y;
      axpy_f32(0.75f, a.data(), y.data(), n);
      axpy_f32_ref(0.75f, a.data(), y2.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        // One fused or two rounded operations: within 2 u of |y| + |alpha·x| of each other.
        EXPECT_NEAR(y[i], y2[i], 2 * u * (std::fabs(y2[i]) + 0.75 * std::fabs(a[i]))) << n;
      }
    }
  });
}

TEST(VecMath, SoftmaxMatchesFloat64) {
  std::mt19937 rng(2);
  testing::for_each_simd_target([&] {
    for (int64_t n : kSizes) {
      auto x = randv(rng, n, -30, 30);
      if (n > 4) x[3] = -std::numeric_limits<float>::infinity();  // masked entry -> exactly 0
      double mx = -INFINITY, s = 0;
      for (float v : x) mx = std::max(mx, double(v));
      for (float v : x) s += std::exp(double(v) - mx);
      auto y = x, y2 = x;
      softmax_f32(y.data(), n);
      softmax_f32_ref(y2.data(), n);
      double total = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double p = std::exp(double(x[i]) - mx) / s;
        // + the rounding of the argument x_i - max: |x_i - max|·u relative error in exp.
        const double arg = std::isinf(x[i]) ? 0.0 : std::fabs(double(x[i]) - mx);
        const double tol = (n + 12 + arg) * u * p + 1e-37;
        EXPECT_NEAR(y[i], p, tol) << "n=" << n << " i=" << i;
        EXPECT_NEAR(y2[i], p, tol) << "n=" << n << " i=" << i;
        total += y[i];
      }
      if (n > 4) EXPECT_EQ(y[3], 0.0f);
      EXPECT_NEAR(total, 1.0, (2 * n + 12) * u);
    }
  });
}

TEST(VecMath, SiluMulMatchesFloat64) {
  std::mt19937 rng(3);
  testing::for_each_simd_target([&] {
    for (int64_t n : kSizes) {
      auto g = randv(rng, n, -20, 20), up = randv(rng, n, -3, 3);
      auto y = g, y2 = g;
      silu_mul_f32(y.data(), up.data(), n);
      silu_mul_f32_ref(y2.data(), up.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double e = double(g[i]) / (1.0 + std::exp(-double(g[i]))) * up[i];
        const double tol = 8 * u * std::fabs(e) + 1e-30;
        EXPECT_NEAR(y[i], e, tol) << "g=" << g[i];
        EXPECT_NEAR(y2[i], e, tol) << "g=" << g[i];
      }
    }
  });
}

TEST(VecMath, RmsNormMatchesFloat64) {
  std::mt19937 rng(4);
  testing::for_each_simd_target([&] {
    for (int64_t n : kSizes) {
      auto x = randv(rng, n, -3, 3), w = randv(rng, n, 0.5f, 1.5f);
      std::vector<float> y(n), y2(n);
      rms_norm_f32(x.data(), w.data(), y.data(), n, 1e-5f);
      rms_norm_f32_ref(x.data(), w.data(), y2.data(), n, 1e-5f);
      double ss = 0;
      for (float v : x) ss += double(v) * v;
      const double inv = 1.0 / std::sqrt(ss / n + 1e-5);
      for (int64_t i = 0; i < n; ++i) {
        const double e = x[i] * inv * w[i];
        // ss within (n + 7) u relative -> inv within half that, + sqrt, division, 2 products.
        const double tol = ((n + 7) / 2.0 + 6) * u * std::fabs(e) + 1e-30;
        EXPECT_NEAR(y[i], e, tol) << n;
        EXPECT_NEAR(y2[i], e, tol) << n;
      }
    }
  });
}

}  // namespace
}  // namespace llmopt::kernels
