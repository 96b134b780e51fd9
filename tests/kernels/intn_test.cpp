// Group-wise int-N weights (kernels/intn.h): bit layout, encode→decode error bound, GEMV against
// a float64 matmul on the decoded weights, every SIMD target against the scalar twin, thread
// invariance, bad input.
//
// Encode bound (kEncodeBound): round to nearest on a grid that covers the group (the f16 scale
// is rounded up, sym uses GPTQ's 2·absmax/maxq, asym rounds the zero point: see fit_group) puts
// every weight within scale/2 of its decoded value; computing w/scale in f32 adds at most
// |w|·2^-24, and the range computations a few ulps of the scale: bound = s/2 + |w|·2^-23 + s·2^-20.
//
// Dot bound (dot_bound): decoded weights s·(q − z) are exact in f32, so every variant
// approximates the exact S = bias + Σ w_j·x_j. A term is rounded at most k + groups + 10 times
// (product, the in-group sum, the scaling by s, the sum over groups, a ≤ log2(16)-level lane
// reduction, the bias), so each variant is within (k + groups + 10)·u·(|bias| + Σ|w_j·x_j|) of
// S (Higham §3.1, u = 2^-24); the float64 reference is exact to far below that, and two f32
// variants differ by at most twice the bound.
#include "kernels/intn.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/half.h"
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

double dot_bound(const float* w_row, const float* x, float bias, int64_t k, int64_t groups) {
  double abs_sum = std::fabs(static_cast<double>(bias));
  for (int64_t i = 0; i < k; ++i) abs_sum += std::fabs(static_cast<double>(w_row[i]) * x[i]);
  return 1.01 * (static_cast<double>(k + groups) + 10) * kU * abs_sum;
}

TEST(IntN, PackLayoutIsLsbFirstBitStream) {
  // 4 bits: element 2i in the low nibble of byte i (GPTQ's order within an int32).
  const uint8_t c4[4] = {1, 2, 3, 15};
  uint8_t p4[2];
  intn_pack_codes(c4, 4, 4, p4);
  EXPECT_EQ(p4[0], 0x21);
  EXPECT_EQ(p4[1], 0xf3);
  // 3 bits: codes 5, 3, 7 -> bits 101 | 011 << 3 | 111 << 6 = 0b1_1101_1101 -> 0xdd, 0x01.
  const uint8_t c3[3] = {5, 3, 7};
  uint8_t p3[2];
  intn_pack_codes(c3, 3, 3, p3);
  EXPECT_EQ(p3[0], 0xdd);
  EXPECT_EQ(p3[1], 0x01);
  // 2 bits: 0, 1, 2, 3 -> 0b11100100.
  const uint8_t c2[4] = {0, 1, 2, 3};
  uint8_t p2[1];
  intn_pack_codes(c2, 4, 2, p2);
  EXPECT_EQ(p2[0], 0xe4);
}

TEST(IntN, PackUnpackRoundTripsEveryWidthAndOffset) {
  std::mt19937 rng(1);
  for (int bits = 2; bits <= 8; ++bits) {
    for (int64_t n : {1, 7, 33, 172, 257}) {
      std::vector<uint8_t> codes(static_cast<size_t>(n));
      for (auto& c : codes) c = static_cast<uint8_t>(rng() % (1u << bits));
      std::vector<uint8_t> packed(static_cast<size_t>(intn_code_bytes(bits, n)));
      intn_pack_codes(codes.data(), n, bits, packed.data());
      for (int64_t start : {int64_t{0}, int64_t{1}, n / 2, n - 1}) {
        std::vector<uint8_t> got(static_cast<size_t>(n - start));
        intn_unpack_codes(packed.data(), start, n - start, bits, got.data());
        for (int64_t j = start; j < n; ++j) ASSERT_EQ(got[j - start], codes[j]) << bits << " bits n=" << n << " j=" << j;
      }
    }
  }
}

TEST(IntN, ScaleRoundsUpToF16) {
  const float s = 0.1f;  // f16(0.1) = 0.0999755859375 < 0.1
  const float up = f16_to_f32(intn_scale_to_f16_up(s));
  EXPECT_GE(up, s);
  EXPECT_LT(up - s, 0.1f * 0x1p-10f);
  EXPECT_EQ(f16_to_f32(intn_scale_to_f16_up(0.5f)), 0.5f);
  EXPECT_THROW(intn_scale_to_f16_up(1e6f), InputError);
}

struct Case {
  int bits;
  int64_t group;
  bool sym;
};

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (int bits = 2; bits <= 8; ++bits)
    for (int64_t group : {32, 64, 128, -1})
      for (bool sym : {true, false}) cases.push_back({bits, group, sym});
  return cases;
}

TEST(IntN, EncodeDecodeWithinHalfStep) {
  std::mt19937 rng(2);
  for (const Case& c : all_cases()) {
    for (int64_t cols : {1, 33, 172, 4097}) {
      const int64_t rows = 3;
      auto w = normal(rows * cols, rng);
      if (!c.sym) for (int64_t j = 0; j < cols; ++j) w[j] += 0.7f;  // an off-centre row
      const IntNStorage s = intn_quantize(w.data(), rows, cols, c.bits, c.group, c.sym);
      intn_check_storage(s, "test");
      const IntNMatrix v = s.view();
      std::vector<float> d(static_cast<size_t>(rows * cols));
      intn_dequantize_rows(v, 0, rows, d.data());
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j) {
          const double scale = v.grid(r, v.group_of(j)).scale;
          const double wj = w[r * cols + j];
          const double bound = scale / 2 + std::fabs(wj) * 0x1p-23 + scale * 0x1p-20;
          ASSERT_LE(std::fabs(wj - d[r * cols + j]), bound)
              << c.bits << " bits group " << c.group << (c.sym ? " sym" : " asym") << " cols " << cols << " [" << r
              << "," << j << "]";
        }
    }
  }
}

TEST(IntN, CompactStorage) {
  std::mt19937 rng(3);
  const auto w = normal(64 * 256, rng);
  const IntNStorage a = intn_quantize(w.data(), 64, 256, 4, 128, true);
  EXPECT_DOUBLE_EQ(a.view().bits_per_weight(), 4.0 + 16.0 / 128);
  const IntNStorage b = intn_quantize(w.data(), 64, 256, 3, 64, false);
  // 4 groups: 4 f16 scales, and 4 3-bit zeros = 12 bits -> 2 bytes per row of 256.
  EXPECT_DOUBLE_EQ(b.view().bits_per_weight(), 3.0 + 16.0 / 64 + 16.0 / 256);
  const IntNStorage c = intn_quantize(w.data(), 64, 256, 8, -1, true);  // int8 per output channel
  EXPECT_DOUBLE_EQ(c.view().bits_per_weight(), 8.0 + 16.0 / 256);
}

TEST(IntN, ClipSearchNeverWorseThanPlainRange) {
  std::mt19937 rng(4);
  for (int bits : {2, 3, 4}) {
    for (bool sym : {true, false}) {
      auto w = normal(128, rng);
      w[5] = 6.0f;  // an outlier that stretches the plain range
      const auto imp = normal(128, rng);
      std::vector<float> importance(imp.size());
      for (size_t i = 0; i < imp.size(); ++i) importance[i] = std::fabs(imp[i]);
      auto err = [&](const IntNGrid& g) {
        double e = 0;
        for (int j = 0; j < 128; ++j) {
          const double d = w[j] - dequantize_code(quantize_code(w[j], g, bits), g);
          e += importance[j] * d * d;
        }
        return e;
      };
      const IntNGrid plain = fit_group(w.data(), 128, bits, sym, importance.data(), false);
      const IntNGrid searched = fit_group(w.data(), 128, bits, sym, importance.data(), true);
      EXPECT_LE(err(searched), err(plain)) << bits << (sym ? " sym" : " asym");
      EXPECT_EQ(f16_to_f32(f32_to_f16(searched.scale)), searched.scale);
    }
  }
}

TEST(IntN, FromCodesDecodesTheGivenGrid) {
  // Two rows of 5 columns, group 2 (tail group of 1), asym 3 bits: w = s·(q − z) in float64.
  const uint8_t codes[10] = {0, 7, 3, 4, 5, 1, 2, 6, 0, 7};
  const IntNGrid grids[6] = {{0.5f, 3}, {0.25f, 0}, {2.0f, 7}, {0.125f, 1}, {1.0f, 4}, {4.0f, 2}};
  const IntNStorage s = intn_from_codes(codes, grids, 2, 5, 3, 2, false);
  std::vector<float> d(10);
  intn_dequantize_rows(s.view(), 0, 2, d.data());
  for (int r = 0; r < 2; ++r)
    for (int j = 0; j < 5; ++j) {
      const IntNGrid& g = grids[r * 3 + j / 2];
      EXPECT_EQ(d[r * 5 + j], static_cast<double>(g.scale) * (codes[r * 5 + j] - static_cast<double>(g.zero)));
    }
  // Symmetric grids must use zero 2^(bits-1); codes must fit the width.
  EXPECT_THROW(intn_from_codes(codes, grids, 2, 5, 3, 2, true), InputError);
  const uint8_t big[2] = {8, 0};
  const IntNGrid g1[1] = {{1.0f, 4}};
  EXPECT_THROW(intn_from_codes(big, g1, 1, 2, 3, -1, true), InputError);
  const IntNGrid bad_scale[1] = {{0.1f, 4}};  // not an f16 value
  EXPECT_THROW(intn_from_codes(codes, bad_scale, 1, 2, 3, -1, true), InputError);
}

TEST(IntN, BadInputIsInputError) {
  std::vector<float> w(64, 1.0f);
  EXPECT_THROW(intn_quantize(w.data(), 1, 64, 1, 32, true), InputError);
  EXPECT_THROW(intn_quantize(w.data(), 1, 64, 9, 32, true), InputError);
  w[3] = std::nanf("");
  EXPECT_THROW(intn_quantize(w.data(), 1, 64, 4, 32, true), InputError);
}

// GEMV (m = 1..8 rows of x) against the float64 product with the decoded weights, at 1 and 2
// threads (bit-identical), with and without act-order g_idx.
TEST(IntN, GemvMatchesDequantizedMatmulWithinDotBound) {
  std::mt19937 rng(5);
  for (const Case& c : all_cases()) {
    if (c.bits != 2 && c.bits != 3 && c.bits != 4 && c.bits != 8) continue;  // the rest: SIMD twin test
    for (int64_t cols : {1, 33, 172, 4097}) {
      for (bool act_order : {false, true}) {
        const int64_t rows = 37;
        const auto w = normal(rows * cols, rng, 0.05f);
        IntNStorage s = intn_quantize(w.data(), rows, cols, c.bits, c.group, c.sym);
        if (act_order) {
          // A permuted group assignment, as GPTQ's desc_act stores it.
          const int64_t groups = s.view().groups(), gs = s.view().group_size();
          s.g_idx.resize(static_cast<size_t>(cols));
          for (int64_t j = 0; j < cols; ++j) s.g_idx[j] = static_cast<int32_t>(((j * 7) % cols) / gs % groups);
        }
        const IntNMatrix v = s.view();
        std::vector<float> d(static_cast<size_t>(rows * cols));
        intn_dequantize_rows(v, 0, rows, d.data());
        for (int64_t m : {1, 3, 8}) {
          const auto x = normal(m * cols, rng);
          const auto bias = normal(rows, rng);
          std::vector<float> y1(static_cast<size_t>(m * rows)), y2(y1.size());
          intn_gemv(v, x.data(), bias.data(), y1.data(), m, 1);
          intn_gemv(v, x.data(), bias.data(), y2.data(), m, 2);
          ASSERT_EQ(y1, y2) << "thread count changed the result";
          for (int64_t i = 0; i < m; ++i)
            for (int64_t r = 0; r < rows; ++r) {
              double want = bias[r];
              for (int64_t j = 0; j < cols; ++j) want += static_cast<double>(d[r * cols + j]) * x[i * cols + j];
              ASSERT_LE(std::fabs(y1[i * rows + r] - want),
                        dot_bound(d.data() + r * cols, x.data() + i * cols, bias[r], cols, v.groups()))
                  << c.bits << " bits group " << c.group << " cols " << cols << " m " << m << " act " << act_order;
            }
        }
      }
    }
  }
}

TEST(IntN, EverySimdTargetMatchesScalarTwin) {
  std::mt19937 rng(6);
  testing::for_each_simd_target([&] {
    for (const Case& c : all_cases()) {
      for (int64_t cols : {1, 33, 172, 4097}) {
        const auto w = normal(2 * cols, rng);
        const IntNStorage s = intn_quantize(w.data(), 2, cols, c.bits, c.group, c.sym);
        const IntNMatrix v = s.view();
        std::vector<float> d(static_cast<size_t>(cols));
        const auto x = normal(cols, rng);
        for (int64_t r = 0; r < 2; ++r) {
          intn_dequantize_rows(v, r, r + 1, d.data());
          ASSERT_LE(std::fabs(static_cast<double>(intn_dot(v, r, x.data())) - intn_dot_ref(v, r, x.data())),
                    2 * dot_bound(d.data(), x.data(), 0.0f, cols, v.groups()))
              << c.bits << " bits group " << c.group << " cols " << cols;
        }
      }
    }
  });
}

}  // namespace
}  // namespace llmopt::kernels
