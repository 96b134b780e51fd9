// NF4 weights (kernels/nf4.h): the code table and packing, quantization optimal over the 16
// values (checked by exhaustive float64 search), double-quantized absmax within half its int8
// step, GEMV against a float64 matmul on the decoded weights, SIMD targets against the twin.
//
// Quantization check: for each weight the decoded value must be as close as the best of the 16
// values v·A_dec (A_dec: the block's decoded absmax), up to rounding of t = w/A_dec and of v·A
// in f32: |w − deq| ≤ min_c |w − v_c·A_dec| + 4·u·A_dec (u = 2^-24; |t| ≤ 1, |v| ≤ 1).
//
// Dot bound: deq = fl(v·A) differs from v·A by u·|v·A|; the kernels compute A·Σ v_j·x_j, each
// term rounded at most k + blocks + 10 times (see intn_test.cpp), so the distance to the float64
// product with the decoded weights is ≤ (k + blocks + 11)·u·(|bias| + Σ|w_j·x_j|).
#include "kernels/nf4.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "each_simd_target.h"

namespace llmopt::kernels {
namespace {

constexpr double kU = 0x1p-24;

std::vector<float> normal(int64_t n, std::mt19937& rng, float sd = 1.0f) {
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& e : v) e = d(rng);
  return v;
}

double dot_bound(const float* w_row, const float* x, float bias, int64_t k) {
  double abs_sum = std::fabs(static_cast<double>(bias));
  for (int64_t i = 0; i < k; ++i) abs_sum += std::fabs(static_cast<double>(w_row[i]) * x[i]);
  const int64_t blocks = (k + kNF4Block - 1) / kNF4Block;
  return 1.01 * (static_cast<double>(k + blocks) + 11) * kU * abs_sum;
}

TEST(NF4, TableIsBitsandbytesNf4) {
  EXPECT_EQ(kNF4Values[0], -1.0f);
  EXPECT_EQ(kNF4Values[7], 0.0f);
  EXPECT_EQ(kNF4Values[15], 1.0f);
  EXPECT_FLOAT_EQ(kNF4Values[8], 0.07958029955625534f);
  for (int c = 0; c < 16; ++c) EXPECT_EQ(nf4_code(kNF4Values[c]), c);
  for (int c = 0; c < 15; ++c) EXPECT_LT(kNF4Values[c], kNF4Values[c + 1]);
}

TEST(NF4, FirstElementInHighNibble) {
  // One block, absmax 2: -2 -> code 0, 2 -> code 15, 0 -> code 7.
  const float w[3] = {-2.0f, 2.0f, 0.0f};
  const NF4Storage s = nf4_quantize(w, 1, 3, false);
  ASSERT_EQ(s.codes.size(), 2u);
  EXPECT_EQ(s.codes[0], 0x0f);
  EXPECT_EQ(s.codes[1], 0x70);
  EXPECT_EQ(s.absmax[0], 2.0f);
}

TEST(NF4, QuantizationIsNearestOf16Values) {
  std::mt19937 rng(7);
  for (bool dq : {false, true}) {
    for (int64_t cols : {1, 33, 172, 4097}) {
      const int64_t rows = 70;  // > 256 absmax values for the double quantization at cols 4097
      const auto w = normal(rows * cols, rng);
      const NF4Storage s = nf4_quantize(w.data(), rows, cols, dq);
      nf4_check_storage(s, "test");
      const NF4Matrix v = s.view();
      std::vector<float> d(static_cast<size_t>(rows * cols));
      nf4_dequantize_rows(v, 0, rows, d.data());
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j) {
          const double a = v.block_absmax(r, j / kNF4Block);
          const double wj = w[r * cols + j];
          double best = 1e300;
          for (float val : kNF4Values) best = std::min(best, std::fabs(wj - val * a));
          ASSERT_LE(std::fabs(wj - d[r * cols + j]), best + 4 * kU * std::fabs(a))
              << (dq ? "dq" : "plain") << " cols " << cols << " [" << r << "," << j << "]";
        }
    }
  }
}

TEST(NF4, DoubleQuantizedAbsmaxWithinHalfStep) {
  std::mt19937 rng(8);
  const int64_t rows = 300, cols = 130;  // 900 absmax values: 4 blocks of 256, the last short
  const auto w = normal(rows * cols, rng);
  const NF4Storage s = nf4_quantize(w.data(), rows, cols, true);
  const NF4Matrix v = s.view();
  // Independent float64 absmax, mean and per-256 step.
  std::vector<double> absmax;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < v.blocks_per_row(); ++b) {
      double a = 0;
      for (int64_t j = b * 64; j < std::min(cols, (b + 1) * 64); ++j) a = std::max(a, std::fabs(double(w[r * cols + j])));
      absmax.push_back(a);
    }
  double mean = 0;
  for (double a : absmax) mean += a;
  mean /= static_cast<double>(absmax.size());
  EXPECT_NEAR(s.absmax_offset, mean, 1e-6 * mean);
  for (size_t d0 = 0; d0 < absmax.size(); d0 += 256) {
    double m = 0;
    for (size_t i = d0; i < std::min(absmax.size(), d0 + 256); ++i) m = std::max(m, std::fabs(absmax[i] - mean));
    const double step = m / 127;
    for (size_t i = d0; i < std::min(absmax.size(), d0 + 256); ++i) {
      const int64_t r = static_cast<int64_t>(i) / v.blocks_per_row(), b = static_cast<int64_t>(i) % v.blocks_per_row();
      ASSERT_LE(std::fabs(v.block_absmax(r, b) - absmax[i]), step / 2 + 1e-6 * absmax[i]) << i;
    }
  }
  EXPECT_NEAR(v.bits_per_weight(), 8.0 * (rows * 65 + 900 + 4 * 4 + 4) / (rows * cols), 1e-12);
  const NF4Storage plain = nf4_quantize(w.data(), 2, 128, false);
  EXPECT_DOUBLE_EQ(plain.view().bits_per_weight(), 4.5);
}

TEST(NF4, GemvMatchesDequantizedMatmulWithinDotBound) {
  std::mt19937 rng(9);
  for (bool dq : {false, true}) {
    for (int64_t cols : {1, 33, 172, 4097}) {
      const int64_t rows = 37;
      const auto w = normal(rows * cols, rng, 0.05f);
      const NF4Storage s = nf4_quantize(w.data(), rows, cols, dq);
      const NF4Matrix v = s.view();
      std::vector<float> d(static_cast<size_t>(rows * cols));
      nf4_dequantize_rows(v, 0, rows, d.data());
      for (int64_t m : {1, 3, 8}) {
        const auto x = normal(m * cols, rng);
        const auto bias = normal(rows, rng);
        std::vector<float> y1(static_cast<size_t>(m * rows)), y2(y1.size());
        nf4_gemv(v, x.data(), bias.data(), y1.data(), m, 1);
        nf4_gemv(v, x.data(), bias.data(), y2.data(), m, 2);
        ASSERT_EQ(y1, y2) << "thread count changed the result";
        for (int64_t i = 0; i < m; ++i)
          for (int64_t r = 0; r < rows; ++r) {
            double want = bias[r];
            for (int64_t j = 0; j < cols; ++j) want += static_cast<double>(d[r * cols + j]) * x[i * cols + j];
            ASSERT_LE(std::fabs(y1[i * rows + r] - want),
                      dot_bound(d.data() + r * cols, x.data() + i * cols, bias[r], cols))
                << "cols " << cols << " m " << m;
          }
      }
    }
  }
}

TEST(NF4, EverySimdTargetMatchesScalarTwin) {
  std::mt19937 rng(10);
  testing::for_each_simd_target([&] {
    for (bool dq : {false, true}) {
      for (int64_t cols : {1, 33, 172, 4097}) {
        const auto w = normal(3 * cols, rng);
        const NF4Storage s = nf4_quantize(w.data(), 3, cols, dq);
        const NF4Matrix v = s.view();
        std::vector<float> d(static_cast<size_t>(cols));
        const auto x = normal(cols, rng);
        for (int64_t r = 0; r < 3; ++r) {
          nf4_dequantize_rows(v, r, r + 1, d.data());
          ASSERT_LE(std::fabs(static_cast<double>(nf4_dot(v, r, x.data())) - nf4_dot_ref(v, r, x.data())),
                    2 * dot_bound(d.data(), x.data(), 0.0f, cols))
              << "cols " << cols;
        }
      }
    }
  });
}

TEST(NF4, BadInputIsInputError) {
  std::vector<float> w(64, 1.0f);
  w[1] = INFINITY;
  EXPECT_THROW(nf4_quantize(w.data(), 1, 64, false), InputError);
  NF4Storage s = nf4_quantize(std::vector<float>(64, 1.0f).data(), 1, 64, false);
  s.absmax.clear();
  EXPECT_THROW(nf4_check_storage(s, "test"), InputError);
}

}  // namespace
}  // namespace llmopt::kernels
