// Decode GEMV rows over int-N and NF4 weights as stored (kernels/gemv_intn.h): against a float64
// matmul on the decoded weights (intn_dequantize_rows / nf4_dequantize_rows, decoded one element
// at a time from the layout definition), at 1 and 2 threads (bit-identical), over odd shapes
// (1, 33, 172, 4097 columns, 37 rows); every SIMD target against the scalar twin; the prefill
// tile dequantizers equal the reference decoders exactly.
//
// Tolerance (dot_bound): decoded weights s·(q − z) and v(q)·absmax are exact f32 products, so
// each variant approximates the exact S = bias + Σ_j w_j·x_j. Every term is rounded at most
// k + groups + 10 times (the product, its additions within the group however the lanes split
// them (≤ group length), the scaling by s or absmax, the sum over groups, a ≤ log2(16)-level
// lane reduction, the bias), so |result − S| ≤ (k + groups + 10)·u·(|bias| + Σ_j |w_j·x_j|),
// u = 2^-24 (Higham §3.1); the float64 reference is exact to far below that. A SIMD variant and
// the scalar twin are each within the bound of S, so within twice it of each other.
#include "kernels/gemv_intn.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "each_simd_target.h"

namespace llmopt::kernels {
namespace {

constexpr double kU = 0x1p-24;
constexpr int64_t kRows = 37;
const int64_t kCols[] = {1, 33, 172, 4097};

std::vector<float> normal(int64_t n, std::mt19937& rng, float sd = 1.0f) {
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& e : v) e = d(rng);
  return v;
}

double dot_bound(const float* w_row, const float* x, float bias, int64_t k, int64_t groups) {
  double abs_sum = std::fabs(static_cast<double>(bias));
  for (int64_t i = 0; i < k; ++i) abs_sum += std::fabs(static_cast<double>(w_row[i]) * x[i]);
  return (static_cast<double>(k + groups) + 10) * kU * abs_sum;
}

struct IntNCase {
  int bits;
  int64_t group;
  bool sym;
  bool act_order;
};

std::vector<IntNCase> intn_cases() {
  std::vector<IntNCase> out;
  for (int bits : {2, 3, 4, 5, 8})
    for (int64_t group : {32, 64, 128, -1})
      for (bool sym : {true, false}) out.push_back({bits, group, sym, false});
  out.push_back({4, 32, true, true});
  out.push_back({4, 32, false, true});
  out.push_back({8, 64, false, true});
  out.push_back({3, 128, true, true});
  return out;
}

IntNStorage make_intn(const IntNCase& c, int64_t cols, std::mt19937& rng) {
  const auto w = normal(kRows * cols, rng, 0.05f);
  IntNStorage s = intn_quantize(w.data(), kRows, cols, c.bits, c.group, c.sym);
  if (c.act_order) {
    // A permuted group assignment, as GPTQ's desc_act stores it.
    const int64_t groups = s.view().groups(), gs = s.view().group_size();
    s.g_idx.resize(static_cast<size_t>(cols));
    for (int64_t j = 0; j < cols; ++j) s.g_idx[j] = static_cast<int32_t>(((j * 7) % cols) / gs % groups);
  }
  return s;
}

// Checks y against the float64 product of the decoded weights d [rows, cols] with x.
void expect_near_f64(const std::vector<float>& y, const std::vector<float>& d, const std::vector<float>& x,
                     const std::vector<float>& bias, int64_t cols, int64_t groups, const std::string& what) {
  for (int64_t r = 0; r < kRows; ++r) {
    double want = bias[r];
    for (int64_t j = 0; j < cols; ++j) want += static_cast<double>(d[r * cols + j]) * x[j];
    ASSERT_LE(std::fabs(y[r] - want), dot_bound(d.data() + r * cols, x.data(), bias[r], cols, groups))
        << what << " row " << r;
  }
}

TEST(GemvIntN, MatchesFloat64MatmulAt1And2Threads) {
  std::mt19937 rng(11);
  for (const IntNCase& c : intn_cases()) {
    for (int64_t cols : kCols) {
      const IntNStorage s = make_intn(c, cols, rng);
      const IntNMatrix v = s.view();
      std::vector<float> d(static_cast<size_t>(kRows * cols));
      intn_dequantize_rows(v, 0, kRows, d.data());
      const auto x = normal(cols, rng);
      const auto bias = normal(kRows, rng);
      std::vector<float> y1(kRows), y2(kRows);
      intn_gemv_decode(v, x.data(), bias.data(), y1.data(), 1);
      intn_gemv_decode(v, x.data(), bias.data(), y2.data(), 2);
      const std::string what = fmt::format("int{} g{} sym {} act {} cols {}", c.bits, c.group, c.sym, c.act_order, cols);
      ASSERT_EQ(y1, y2) << what << ": thread count changed the result";
      expect_near_f64(y1, d, x, bias, cols, v.groups(), what);
    }
  }
}

TEST(GemvIntN, Int4AndInt8TakeTheFastPath) {
  IntNMatrix w;
  w.cols = 4097;
  for (int bits : {4, 8})
    for (int64_t group : {32, 64, 128, -1}) {
      w.bits = bits, w.group = group;
      EXPECT_TRUE(intn_gemv_fast(w)) << bits << " bits, group " << group;
    }
  w.bits = 3;
  EXPECT_FALSE(intn_gemv_fast(w));
}

TEST(GemvNF4, MatchesFloat64MatmulAt1And2Threads) {
  std::mt19937 rng(12);
  for (bool dq : {false, true}) {
    for (int64_t cols : kCols) {
      const auto w = normal(kRows * cols, rng, 0.05f);
      const NF4Storage s = nf4_quantize(w.data(), kRows, cols, dq);
      const NF4Matrix v = s.view();
      std::vector<float> d(static_cast<size_t>(kRows * cols));
      nf4_dequantize_rows(v, 0, kRows, d.data());
      const auto x = normal(cols, rng);
      const auto bias = normal(kRows, rng);
      std::vector<float> y1(kRows), y2(kRows);
      nf4_gemv_decode(v, x.data(), bias.data(), y1.data(), 1);
      nf4_gemv_decode(v, x.data(), bias.data(), y2.data(), 2);
      const std::string what = fmt::format("nf4 dq {} cols {}", dq, cols);
      ASSERT_EQ(y1, y2) << what << ": thread count changed the result";
      expect_near_f64(y1, d, x, bias, cols, v.blocks_per_row(), what);
    }
  }
}

TEST(GemvIntN, EverySimdTargetMatchesScalarTwin) {
  std::mt19937 rng(13);
  std::vector<std::pair<IntNStorage, int64_t>> mats;
  for (const IntNCase& c : intn_cases())
    for (int64_t cols : kCols) mats.emplace_back(make_intn(c, cols, rng), cols);
  testing::for_each_simd_target([&] {
    for (const auto& [s, cols] : mats) {
      const IntNMatrix v = s.view();
      std::vector<float> d(static_cast<size_t>(kRows * cols));
      intn_dequantize_rows(v, 0, kRows, d.data());
      const auto x = normal(cols, rng);
      std::vector<float> y(kRows), ref(kRows);
      intn_gemv_rows(v, x.data(), nullptr, y.data(), 0, kRows);
      intn_gemv_rows_ref(v, x.data(), nullptr, ref.data(), 0, kRows);
      for (int64_t r = 0; r < kRows; ++r)
        ASSERT_LE(std::fabs(static_cast<double>(y[r]) - ref[r]),
                  2 * dot_bound(d.data() + r * cols, x.data(), 0.0f, cols, v.groups()))
            << "int" << v.bits << " group " << v.group << " cols " << cols << " row " << r;
    }
  });
}

TEST(GemvNF4, EverySimdTargetMatchesScalarTwin) {
  std::mt19937 rng(14);
  testing::for_each_simd_target([&] {
    for (bool dq : {false, true})
      for (int64_t cols : kCols) {
        const auto w = normal(kRows * cols, rng, 0.05f);
        const NF4Storage s = nf4_quantize(w.data(), kRows, cols, dq);
        const NF4Matrix v = s.view();
        std::vector<float> d(static_cast<size_t>(kRows * cols));
        nf4_dequantize_rows(v, 0, kRows, d.data());
        const auto x = normal(cols, rng);
        std::vector<float> y(kRows), ref(kRows);
        nf4_gemv_rows(v, x.data(), nullptr, y.data(), 0, kRows);
        nf4_gemv_rows_ref(v, x.data(), nullptr, ref.data(), 0, kRows);
        for (int64_t r = 0; r < kRows; ++r)
          ASSERT_LE(std::fabs(static_cast<double>(y[r]) - ref[r]),
                    2 * dot_bound(d.data() + r * cols, x.data(), 0.0f, cols, v.blocks_per_row()))
              << "nf4 dq " << dq << " cols " << cols << " row " << r;
      }
  });
}

TEST(GemvIntN, TileDequantizersEqualReferenceDecoders) {
  std::mt19937 rng(15);
  for (const IntNCase& c : intn_cases()) {
    for (int64_t cols : {33, 172}) {
      const IntNStorage s = make_intn(c, cols, rng);
      std::vector<float> a(static_cast<size_t>(kRows * cols)), b(a.size());
      intn_dequantize_rows(s.view(), 0, kRows, a.data());
      intn_dequantize_tile(s.view(), 0, kRows, b.data());
      ASSERT_EQ(a, b) << "int" << c.bits << " group " << c.group << " cols " << cols;
    }
  }
  for (bool dq : {false, true}) {
    const auto w = normal(kRows * 172, rng, 0.05f);
    const NF4Storage s = nf4_quantize(w.data(), kRows, 172, dq);
    std::vector<float> a(static_cast<size_t>(kRows * 172)), b(a.size());
    nf4_dequantize_rows(s.view(), 0, kRows, a.data());
    nf4_dequantize_tile(s.view(), 0, kRows, b.data());
    ASSERT_EQ(a, b) << "nf4 dq " << dq;
  }
}

}  // namespace
}  // namespace llmopt::kernels
