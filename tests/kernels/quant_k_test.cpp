// The search-based ggml quantizers: the K formats' reference quantizers and the importance-
// weighted quantizers of quant_formats.h (bit-exactness with llama.cpp itself is checked by the
// peer test tests/peer/test_llama_kquants.py; here, properties that follow from the definitions):
//  1. exact grids: a super-block whose values lie on a grid the format can represent exactly
//     (dyadic steps and offsets, codes spanning the full range) comes back exactly, with the
//     step/offset fields worked out by hand;
//  2. nearest code: every element is decoded to the code nearest to it given the block's stored
//     (f16, quantized) scales, so |x - x̂| ≤ step/2 inside the representable interval and the
//     distance to the interval outside it — plus the f32 rounding of the requantization;
//  3. importance: the weighted quantizer lowers the importance-weighted squared error compared
//     with the reference on random rows, in total and for most rows; nullptr importance is the
//     reference; importance scaled by a power of two gives identical bytes (all comparisons in
//     the search are homogeneous in the weights);
//  4. odd sizes (1, 3, 5 super-blocks; rows of 32·k for the 32-value formats), bad sizes rejected.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "kernels/quant_formats.h"

namespace llmopt::kernels {
namespace {

constexpr DType kKTypes[] = {DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

std::vector<float> roundtrip(DType t, const std::vector<float>& x, std::vector<uint8_t>* bytes = nullptr,
                             const float* importance = nullptr) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> q(n / dtype_block_elems(t) * dtype_block_bytes(t));
  quantize_row_weighted(t, x.data(), q.data(), n, importance);
  std::vector<float> y(n);
  dequantize_row(t, q.data(), y.data(), n);
  if (bytes) *bytes = q;
  return y;
}

// ---- 1. exact grids --------------------------------------------------------------------------

// Q4_K / Q5_K: sub-block j holds x = s_j·q - m_j, q running over all codes 0..nmax, with
// s_j = k_j/64 (k_7 = 63 the largest) and m_j = c_j/32 (c_3 = 63 the largest). The search finds
// the codes q with zero error, the 6-bit scales round to k_j and c_j exactly (63·s_j/max_s = k_j),
// d = max_s/63 = 1/64 and dmin = max_m/63 = 1/32 are exact in f16, so decoding d·k_j·q - dmin·c_j
// reproduces every x bit for bit.
template <class Block>
void check_affine_grid(DType t, int nmax) {
  SCOPED_TRACE(dtype_name(t));
  const int k[8] = {1, 7, 20, 33, 40, 50, 62, 63};
  const int c[8] = {5, 1, 30, 63, 17, 9, 44, 2};
  std::vector<float> x(kQK_K);
  for (int j = 0; j < 8; ++j)
    for (int l = 0; l < 32; ++l) {
      const int q = (l * 7) % (nmax + 1);  // covers 0 and nmax in every sub-block
      x[32 * j + l] = static_cast<float>(k[j]) / 64 * static_cast<float>(q) - static_cast<float>(c[j]) / 32;
    }
  std::vector<uint8_t> bytes;
  const auto y = roundtrip(t, x, &bytes);
  for (int e = 0; e < kQK_K; ++e) ASSERT_EQ(y[e], x[e]) << "element " << e;
  Block b;
  std::memcpy(&b, bytes.data(), sizeof b);
  EXPECT_EQ(b.d, f32_to_f16(1.0f / 64));
  EXPECT_EQ(b.dmin, f32_to_f16(1.0f / 32));
  EXPECT_EQ(b.scales[0], 1 | ((40 >> 4) << 6));        // k_0, plus the top 2 bits of k_4 = 40
  EXPECT_EQ(b.scales[7], 63 | ((2 >> 4) << 6));         // c_3, plus the top 2 bits of c_7 = 2
  EXPECT_EQ(b.scales[11], (63 & 15) | ((2 & 15) << 4));  // j = 7: low nibbles of k_7 and c_7
}

TEST(QuantK, Q4_KExactGrid) { check_affine_grid<BlockQ4_K>(DType::Q4_K, 15); }
TEST(QuantK, Q5_KExactGrid) { check_affine_grid<BlockQ5_K>(DType::Q5_K, 31); }

// Q2_K: 16 sub-blocks of 16, x = s_j·q - m_j with q over 0..3, s_j = k_j/16 (max 15/16),
// m_j = c_j/8 (max 15/8): 4-bit scales k_j, c_j; d = 1/16, dmin = 1/8 exact in f16.
TEST(QuantK, Q2_KExactGrid) {
  std::vector<float> x(kQK_K);
  for (int j = 0; j < 16; ++j) {
    const int k = 1 + j % 15, c = 15 - j % 15;
    for (int l = 0; l < 16; ++l)
      x[16 * j + l] = static_cast<float>(k) / 16 * static_cast<float>(l % 4) - static_cast<float>(c) / 8;
  }
  std::vector<uint8_t> bytes;
  const auto y = roundtrip(DType::Q2_K, x, &bytes);
  for (int e = 0; e < kQK_K; ++e) ASSERT_EQ(y[e], x[e]) << "element " << e;
  BlockQ2_K b;
  std::memcpy(&b, bytes.data(), sizeof b);
  EXPECT_EQ(b.d, f32_to_f16(1.0f / 16));
  EXPECT_EQ(b.dmin, f32_to_f16(1.0f / 8));
  EXPECT_EQ(b.scales[0], 1 | (15 << 4));
  EXPECT_EQ(b.scales[14], 15 | (1 << 4));
  EXPECT_EQ(b.qs[0], 0 | (0 << 2) | (0 << 4) | (0 << 6));  // elements 0, 32, 64, 96: q = 0
  EXPECT_EQ(b.qs[1], 1 | (1 << 2) | (1 << 4) | (1 << 6));
}

// Q3_K: symmetric, x = s_j·l with l over -4..3 (the extreme -4·s_j present), s_j = k_j/64 with
// max 32/64: make_q3_quants returns s_j exactly (dyadic sums), the 6-bit scales are
// -32·s_j/max_s = -k_j, d = max_s/-32 = -1/64.
TEST(QuantK, Q3_KExactGrid) {
  std::vector<float> x(kQK_K);
  for (int j = 0; j < 16; ++j) {
    const int k = 32 >> (j % 6);
    for (int l = 0; l < 16; ++l) x[16 * j + l] = static_cast<float>(k) / 64 * static_cast<float>(l % 8 - 4);
  }
  std::vector<uint8_t> bytes;
  const auto y = roundtrip(DType::Q3_K, x, &bytes);
  for (int e = 0; e < kQK_K; ++e) ASSERT_EQ(y[e], x[e]) << "element " << e;
  BlockQ3_K b;
  std::memcpy(&b, bytes.data(), sizeof b);
  EXPECT_EQ(b.d, f32_to_f16(-1.0f / 64));
  // Sub-block 0: scale -32 stored as 0 (low nibble of byte 0, top bits 0); sub-block 1: -16 -> 16.
  EXPECT_EQ(b.scales[0] & 0x0f, 0);
  EXPECT_EQ(b.scales[1] & 0x0f, 0);
  EXPECT_EQ((b.scales[8] >> 2) & 3, 1);  // high bits of sub-block 4 (k = 2: -2 + 32 = 30 -> 1)
}

// Q6_K: x = s_j·l with l over -32..31 (the extreme -32·s_j present), s_j = 2^-(1 + j%5): the
// search returns s_j exactly, int8 scales -128·s_j/max_s, d = max_s/-128 = -1/256.
TEST(QuantK, Q6_KExactGrid) {
  std::vector<float> x(kQK_K);
  for (int j = 0; j < 16; ++j) {
    const float s = std::ldexp(1.0f, -(1 + j % 5));
    for (int l = 0; l < 16; ++l) x[16 * j + l] = s * static_cast<float>(l == 0 ? -32 : (l * 13) % 64 - 32);
  }
  std::vector<uint8_t> bytes;
  const auto y = roundtrip(DType::Q6_K, x, &bytes);
  for (int e = 0; e < kQK_K; ++e) ASSERT_EQ(y[e], x[e]) << "element " << e;
  BlockQ6_K b;
  std::memcpy(&b, bytes.data(), sizeof b);
  EXPECT_EQ(b.d, f32_to_f16(-1.0f / 256));
  EXPECT_EQ(b.scales[0], -128);
  EXPECT_EQ(b.scales[1], -64);
  EXPECT_EQ(b.scales[4], -8);
}

// Q8_K on x_j = j - 128: the extreme is -128, iscale = -127/-128, q_j = round((j - 128)·127/128)
// (ties to even), d = 128/127 as f32, bsums the sums of 16 codes.
TEST(QuantK, Q8_KHandComputed) {
  std::vector<float> x(kQK_K);
  for (int j = 0; j < kQK_K; ++j) x[j] = static_cast<float>(j - 128);
  BlockQ8_K b;
  quantize_row_ref(DType::Q8_K, x.data(), &b, kQK_K);
  EXPECT_EQ(b.d, 1 / (-127.f / -128.f));
  EXPECT_EQ(b.qs[0], -127);
  EXPECT_EQ(b.qs[64], -64);   // -64·127/128 = -63.5 exactly: ties to even
  EXPECT_EQ(b.qs[128], 0);
  EXPECT_EQ(b.qs[255], 126);  // 127·127/128 = 126.0078
  int sum = 0;
  for (int j = 0; j < 16; ++j) sum += b.qs[j];
  EXPECT_EQ(b.bsums[0], sum);
}


// ---- 2. nearest code given the stored scales -------------------------------------------------

// One sub-block as stored: values are step·q - offset for integer codes q in [lo, hi].
struct SubBlock {
  int elems;
  double step, offset;
  int lo, hi;
};

// Sub-block `sub` of a stored super-block, read from the layouts of quant_formats.h.
SubBlock stored_sub_block(DType t, const uint8_t* block, int sub) {
  switch (t) {
    case DType::Q2_K: {
      BlockQ2_K b;
      std::memcpy(&b, block, sizeof b);
      return {16, f16_to_f32(b.d) * (b.scales[sub] & 15), f16_to_f32(b.dmin) * (b.scales[sub] >> 4), 0, 3};
    }
    case DType::Q3_K: {
      BlockQ3_K b;
      std::memcpy(&b, block, sizeof b);
      const int low = sub < 8 ? (b.scales[sub] & 15) : (b.scales[sub - 8] >> 4);
      const int high = (b.scales[8 + sub % 4] >> (2 * (sub / 4))) & 3;
      return {16, f16_to_f32(b.d) * ((low | (high << 4)) - 32), 0.0, -4, 3};
    }
    case DType::Q4_K:
    case DType::Q5_K: {
      // d, dmin, scales[12] lead both layouts.
      uint16_t d, dmin;
      uint8_t q[12];
      std::memcpy(&d, block, 2);
      std::memcpy(&dmin, block + 2, 2);
      std::memcpy(q, block + 4, 12);
      int sc, m;
      if (sub < 4) {
        sc = q[sub] & 63;
        m = q[sub + 4] & 63;
      } else {
        sc = (q[sub + 4] & 15) | ((q[sub - 4] >> 6) << 4);
        m = (q[sub + 4] >> 4) | ((q[sub] >> 6) << 4);
      }
      return {32, f16_to_f32(d) * sc, f16_to_f32(dmin) * m, 0, t == DType::Q4_K ? 15 : 31};
    }
    case DType::Q6_K: {
      BlockQ6_K b;
      std::memcpy(&b, block, sizeof b);
      return {16, f16_to_f32(b.d) * b.scales[sub], 0.0, -32, 31};
    }
    default: ADD_FAILURE() << dtype_name(t); return {};
  }
}

// Gaussian rows with a few large outliers, a zero stretch and a constant stretch.
std::vector<float> random_row(int64_t n, std::mt19937& rng, float sigma = 1.0f) {
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> x(n);
  for (auto& v : x) v = dist(rng);
  std::uniform_int_distribution<int64_t> pos(0, n - 1);
  for (int k = 0; k < 3; ++k) x[pos(rng)] *= 12.0f;
  if (n >= 512) {
    std::fill(x.begin() + 256, x.begin() + 288, 0.0f);
    std::fill(x.begin() + 288, x.begin() + 320, 0.375f);
  }
  return x;
}

// Bound per element (sub-blocks with a zero step keep their search codes and are skipped; ggml
// does not requantize them): the requantization picks q = round((x + offset)/step) clamped to
// [lo, hi], so |x - x̂| ≤ step/2 inside [lo·step - offset, hi·step - offset] and the distance to
// that interval outside it. Float slop: (x + offset)/step and step·q - offset are each rounded
// (relative u = 2^-24), which can move a near-tie to the other code and perturb x̂: at most
// 4u·(|x| + |offset| + max(|lo|, |hi|)·|step|).
TEST(QuantK, EveryElementTakesTheNearestCodeOfItsStoredScales) {
  std::mt19937 rng(11);
  const double u = std::ldexp(1.0, -24);
  std::exponential_distribution<float> expo(1.0f);
  for (DType t : kKTypes) {
    SCOPED_TRACE(dtype_name(t));
    int64_t checked = 0, skipped = 0;
    for (int64_t blocks : {1, 3, 5}) {
      for (int weighted = 0; weighted < 2; ++weighted) {
        const int64_t n = blocks * kQK_K;
        const auto x = random_row(n, rng, blocks == 3 ? 0.01f : 1.0f);
        std::vector<float> importance(n);
        for (auto& v : importance) v = expo(rng);
        std::vector<uint8_t> bytes;
        const auto y = roundtrip(t, x, &bytes, weighted ? importance.data() : nullptr);
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const uint8_t* block = bytes.data() + blk * dtype_block_bytes(t);
          int e0 = 0;
          for (int sub = 0; e0 < kQK_K; ++sub) {
            const SubBlock sb = stored_sub_block(t, block, sub);
            if (sb.step == 0) {
              ++skipped;
              e0 += sb.elems;
              continue;
            }
            const double a = sb.lo * sb.step - sb.offset, b = sb.hi * sb.step - sb.offset;
            const double lo = std::min(a, b), hi = std::max(a, b);
            for (int e = e0; e < e0 + sb.elems; ++e, ++checked) {
              const int64_t i = blk * kQK_K + e;
              const double xv = x[i];
              const double outside = std::max({0.0, lo - xv, xv - hi});
              const double slop = 4 * u * (std::fabs(xv) + std::fabs(sb.offset) + 32 * std::fabs(sb.step));
              ASSERT_LE(std::fabs(y[i] - xv), std::max(std::fabs(sb.step) / 2, outside) + slop)
                  << "row of " << n << " weighted " << weighted << " element " << i << " step " << sb.step;
            }
            e0 += sb.elems;
          }
        }
      }
    }
    // A zero step comes only from a sub-block whose scale rounds to 0 against the largest one:
    // rare on these rows (fewer than 1 in 20 sub-blocks; `checked / 16` bounds the sub-blocks).
    EXPECT_LT(skipped * 20, checked / 16) << "too many unrequantized sub-blocks";
  }
}

// ---- 3. importance ---------------------------------------------------------------------------

double weighted_sse(const std::vector<float>& x, const std::vector<float>& y, const float* w,
                    int64_t begin, int64_t end) {
  double s = 0;
  for (int64_t j = begin; j < end; ++j) s += w[j] * (static_cast<double>(x[j]) - y[j]) * (x[j] - y[j]);
  return s;
}

// Importance as calibration produces it: mean squared activations spread over orders of
// magnitude (log-normal, σ = 1.5 in log space), the same vector for every row of a matrix.
std::vector<float> activation_importance(int64_t n, std::mt19937& rng) {
  std::lognormal_distribution<float> dist(0.0f, 1.5f);
  std::vector<float> w(n);
  for (auto& v : w) v = dist(rng);
  return w;
}

// The point of the weighted quantizer: with the importance of real activations, the error that
// matters, Σ importance·(x - x̂)², drops compared with the reference rounding. Measured on 64
// rows of 512 (seed 3), weighted/reference: Q4_0 0.868, Q4_1 0.517, Q5_0 0.882, Q5_1 0.621,
// Q2_K 0.603, Q3_K 0.782, Q4_K 0.733, Q5_K 0.781, Q6_K 0.903, lower in 60-64 of 64 rows. The
// assertion is the honest minimum: lower in total, and lower for at least 3/4 of the rows.
TEST(QuantK, ImportanceLowersTheWeightedErrorOfMostRows) {
  std::mt19937 rng(3);
  const int64_t n = 512, rows = 64;
  const auto importance = activation_importance(n, rng);
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q2_K, DType::Q3_K,
                  DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    SCOPED_TRACE(dtype_name(t));
    double total_ref = 0, total_weighted = 0;
    int better = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const auto x = random_row(n, rng);
      const auto y_ref = roundtrip(t, x);
      const auto y_w = roundtrip(t, x, nullptr, importance.data());
      const double e_ref = weighted_sse(x, y_ref, importance.data(), 0, n);
      const double e_w = weighted_sse(x, y_w, importance.data(), 0, n);
      total_ref += e_ref;
      total_weighted += e_w;
      better += e_w < e_ref;
    }
    std::printf("[ QuantK ] %s: importance-weighted error, weighted/reference = %.3f, %d of %d rows lower\n",
                std::string(dtype_name(t)).c_str(), total_weighted / total_ref, better, static_cast<int>(rows));
    EXPECT_LT(total_weighted, total_ref);
    EXPECT_GE(better * 4, rows * 3);
  }
}

TEST(QuantK, NullImportanceIsTheReferenceAndScaleDoesNotMatter) {
  std::mt19937 rng(4);
  for (const QuantTraits& traits : quant_traits_table()) {
    SCOPED_TRACE(dtype_name(traits.type));
    const int64_t n = 3 * kQK_K;
    const auto x = random_row(n, rng);
    auto importance = activation_importance(n, rng);
    std::vector<uint8_t> ref(n / traits.block_elems * traits.block_bytes), none(ref.size()), a(ref.size()),
        b(ref.size());
    quantize_row_ref(traits.type, x.data(), ref.data(), n);
    quantize_row_weighted(traits.type, x.data(), none.data(), n, nullptr);
    EXPECT_EQ(ref, none);
    quantize_row_weighted(traits.type, x.data(), a.data(), n, importance.data());
    // Every comparison of the search is homogeneous of the same degree in the weights on both
    // sides, and a power-of-two factor rounds exactly, so the bytes cannot change.
    for (auto& v : importance) v *= 8.0f;
    quantize_row_weighted(traits.type, x.data(), b.data(), n, importance.data());
    EXPECT_EQ(a, b);
    // The 8-bit formats ignore importance (as llama.cpp); the others depend on it.
    if (!has_quantize_weighted(traits.type)) {
      EXPECT_EQ(a, ref);
    }
  }
}

// Uniform importance: the weighted search minimizes Σ sqrt(σ² + x²)·(x - x̂)², a squared error
// that leans toward large values. Against the 32-value formats' references (absmax / min-max
// rounding, no search) it must win in plain squared error over many rows. The K references
// already search with similar weights (Q4_K/Q5_K: RMS + |x|), so there only a tie is expected:
// within 1%. Measured (seed 5, 64 rows of 512): Q4_0 0.974, Q4_1 0.828, Q5_0 0.984,
// Q5_1 0.854, Q2_K 0.835, Q3_K 0.964, Q4_K 1.001, Q5_K 0.982, Q6_K 0.983.
TEST(QuantK, UniformImportanceIsNoWorseInSquaredError) {
  std::mt19937 rng(5);
  const int64_t n = 512, rows = 64;
  const std::vector<float> ones(n, 1.0f);
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q2_K, DType::Q3_K,
                  DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    SCOPED_TRACE(dtype_name(t));
    double total_ref = 0, total_weighted = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const auto x = random_row(n, rng);
      total_ref += weighted_sse(x, roundtrip(t, x), ones.data(), 0, n);
      total_weighted += weighted_sse(x, roundtrip(t, x, nullptr, ones.data()), ones.data(), 0, n);
    }
    std::printf("[ QuantK ] %s: uniform importance, squared error weighted/reference = %.3f\n",
                std::string(dtype_name(t)).c_str(), total_weighted / total_ref);
    if (dtype_block_elems(t) == kQK)
      EXPECT_LT(total_weighted, total_ref);
    else
      EXPECT_LE(total_weighted, 1.01 * total_ref);
  }
}

// A single important column is reproduced better when it carries the importance.
TEST(QuantK, AnImportantColumnIsKeptMoreAccurately) {
  std::mt19937 rng(9);
  const int64_t n = 2 * kQK_K;
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q6_K}) {
    SCOPED_TRACE(dtype_name(t));
    double err_plain = 0, err_weighted = 0;
    for (int trial = 0; trial < 32; ++trial) {
      const auto x = random_row(n, rng);
      std::vector<float> importance(n, 1.0f);
      std::uniform_int_distribution<int64_t> pos(0, n - 1);
      const int64_t j = pos(rng);
      importance[j] = 1000.0f;
      const auto y_plain = roundtrip(t, x);
      const auto y_w = roundtrip(t, x, nullptr, importance.data());
      err_plain += std::fabs(y_plain[j] - x[j]);
      err_weighted += std::fabs(y_w[j] - x[j]);
    }
    EXPECT_LT(err_weighted, err_plain);
  }
}

// ---- 4. sizes --------------------------------------------------------------------------------

TEST(QuantK, RowsMustBeWholeSuperBlocks) {
  std::vector<float> x(kQK_K + 32, 0.5f), w(x.size(), 1.0f);
  std::vector<uint8_t> out(4096);
  for (DType t : kKTypes) {
    EXPECT_THROW(quantize_row_ref(t, x.data(), out.data(), kQK_K + 32), InputError);
    EXPECT_THROW(quantize_row_weighted(t, x.data(), out.data(), kQK_K + 32, w.data()), InputError);
    EXPECT_NO_THROW(quantize_row_weighted(t, x.data(), out.data(), 0, w.data()));
  }
  EXPECT_THROW(quantize_row_weighted(DType::Q4_0, x.data(), out.data(), 33, w.data()), InputError);
  EXPECT_THROW(quantize_row_weighted(DType::F16, x.data(), out.data(), 32, w.data()), InputError);
  try {
    quantize_row_weighted(DType::Q4_K, x.data(), out.data(), 300, w.data());
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("Q4_K"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("256"), std::string::npos) << e.what();
  }
}

// Zero and constant super-blocks: all formats decode them exactly (zero) or within the bound
// (the constant is the offset of an affine format, or the extreme code of a symmetric one).
TEST(QuantK, ZeroSuperBlocksStayZero) {
  std::vector<float> x(2 * kQK_K, 0.0f), w(x.size(), 1.0f);
  for (DType t : kKTypes) {
    for (const float* importance : {static_cast<const float*>(nullptr), static_cast<const float*>(w.data())}) {
      const auto y = roundtrip(t, x, nullptr, importance);
      for (float v : y) ASSERT_EQ(v, 0.0f) << dtype_name(t);
    }
  }
}

}  // namespace
}  // namespace llmopt::kernels
