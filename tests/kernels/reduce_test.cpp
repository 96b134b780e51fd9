// sum_f32 against its sequential twin. Tolerance: each sum is within (n-1+log2(64))·u·Σ|x_i| of
// the exact value (Higham §4.2, u = 2^-24; the SIMD tree adds at most log2(lanes) levels), so
// they differ by at most twice that.
#include "kernels/reduce.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "each_simd_target.h"

namespace llmopt::kernels {
namespace {

TEST(Reduce, SumMatchesScalarTwinWithinSummationBound) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  testing::for_each_simd_target([&] {
    for (int64_t n : {0, 1, 7, 33, 172, 1000, 4099}) {
      std::vector<float> x(n);
      double abs_sum = 0;
      for (auto& v : x) {
        v = dist(rng);
        abs_sum += std::fabs(v);
      }
      const double bound = 2.0 * (static_cast<double>(n) + 6) * std::ldexp(1.0, -24) * abs_sum;
      EXPECT_LE(std::fabs(static_cast<double>(sum_f32(x.data(), n)) - sum_f32_ref(x.data(), n)),
                bound)
          << "n=" << n;
    }
  });
}

TEST(Reduce, SmallIntegersSumExactly) {
  std::vector<float> x(1001);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i);
  EXPECT_EQ(sum_f32(x.data(), 1001), 500500.0f);  // every partial sum < 2^24: exact
}

}  // namespace
}  // namespace llmopt::kernels
