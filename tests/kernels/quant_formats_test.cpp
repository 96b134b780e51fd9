// ggml block formats: table coverage, hand-built blocks whose decoded values were worked out by
// hand from the layout definitions (ggml-common.h), quantize -> dequantize error bounds for every
// format with a reference quantizer, and ggml's reference rounding on a hand-computed block.
#include "kernels/quant_formats.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/half.h"

namespace llmopt::kernels {
namespace {

// f16 bit patterns of exactly representable scales.
constexpr uint16_t kHalfOne = 0x3c00, kHalfHalf = 0x3800, kHalfQuarter = 0x3400, kHalfTwo = 0x4000,
                   kHalfMinusOne = 0xbc00;

template <class Block>
std::vector<float> decode(DType t, const Block& b) {
  std::vector<float> y(dtype_block_elems(t));
  dequantize_row(t, &b, y.data(), static_cast<int64_t>(y.size()));
  return y;
}

TEST(QuantFormats, TableCoversEveryBlockDTypeWithCoreSizes) {
  int listed = 0;
  for (int code = 0; code <= static_cast<int>(DType::Q8_K); ++code) {
    const auto t = static_cast<DType>(code);
    const QuantTraits* traits = find_quant_traits(t);
    if (!dtype_is_block_quantized(t)) {
      EXPECT_EQ(traits, nullptr) << dtype_name(t);
      continue;
    }
    ASSERT_NE(traits, nullptr) << dtype_name(t);
    EXPECT_EQ(traits->block_elems, dtype_block_elems(t)) << dtype_name(t);
    EXPECT_EQ(traits->block_bytes, dtype_block_bytes(t)) << dtype_name(t);
    EXPECT_NE(traits->dequantize, nullptr);
    ++listed;
  }
  EXPECT_EQ(listed, static_cast<int>(quant_traits_table().size()));
  for (const auto& traits : quant_traits_table()) {
    EXPECT_TRUE(has_quantize_ref(traits.type)) << dtype_name(traits.type);
    // Importance matters for every format llama.cpp's imatrix path searches (all but the 8-bit).
    const bool eight_bit = traits.type == DType::Q8_0 || traits.type == DType::Q8_1 ||
                           traits.type == DType::Q8_K;
    EXPECT_EQ(has_quantize_weighted(traits.type), !eight_bit) << dtype_name(traits.type);
  }
}

TEST(QuantFormats, Q4_0HandBuilt) {
  BlockQ4_0 b{};
  b.d = kHalfHalf;
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const auto y = decode(DType::Q4_0, b);
  EXPECT_EQ(y[0], -4.0f);   // (0 - 8)·0.5
  EXPECT_EQ(y[9], 0.5f);    // (9 - 8)·0.5
  EXPECT_EQ(y[15], 3.5f);   // (15 - 8)·0.5
  EXPECT_EQ(y[16], 3.5f);   // high nibble of qs[0] = 15
  EXPECT_EQ(y[31], -4.0f);  // high nibble of qs[15] = 0
}

TEST(QuantFormats, Q4_1HandBuilt) {
  BlockQ4_1 b{};
  b.d = kHalfQuarter;
  b.m = kHalfMinusOne;
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | (3 << 4));
  const auto y = decode(DType::Q4_1, b);
  EXPECT_EQ(y[0], -1.0f);    // 0·0.25 - 1
  EXPECT_EQ(y[12], 2.0f);    // 12·0.25 - 1
  EXPECT_EQ(y[20], -0.25f);  // 3·0.25 - 1
}

TEST(QuantFormats, Q5_0HandBuilt) {
  BlockQ5_0 b{};
  b.d = kHalfOne;
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | (j << 4));
  // qh as little-endian u32 = 0x00020001: bit 0 (element 0) and bit 17 (element 17) set.
  b.qh[0] = 0x01;
  b.qh[2] = 0x02;
  const auto y = decode(DType::Q5_0, b);
  EXPECT_EQ(y[0], 0.0f);    // (0 | 16) - 16
  EXPECT_EQ(y[1], -15.0f);  // 1 - 16
  EXPECT_EQ(y[16], -16.0f); // 0 - 16
  EXPECT_EQ(y[17], 1.0f);   // (1 | 16) - 16
  EXPECT_EQ(y[31], -1.0f);  // 15 - 16
}

TEST(QuantFormats, Q5_1HandBuilt) {
  BlockQ5_1 b{};
  b.d = kHalfHalf;
  b.m = kHalfOne;
  for (int j = 0; j < 16; ++j) b.qs[j] = 0xf5;  // low 5, high 15
  b.qh[3] = 0x80;                                // bit 31 -> element 31
  const auto y = decode(DType::Q5_1, b);
  EXPECT_EQ(y[3], 3.5f);    // 5·0.5 + 1
  EXPECT_EQ(y[20], 8.5f);   // 15·0.5 + 1
  EXPECT_EQ(y[31], 16.5f);  // (15 | 16)·0.5 + 1
}

TEST(QuantFormats, Q8_0AndQ8_1HandBuilt) {
  BlockQ8_0 b{};
  b.d = kHalfTwo;
  for (int j = 0; j < 32; ++j) b.qs[j] = static_cast<int8_t>(j - 16);
  const auto y = decode(DType::Q8_0, b);
  EXPECT_EQ(y[0], -32.0f);
  EXPECT_EQ(y[31], 30.0f);
  BlockQ8_1 c{};
  c.d = kHalfHalf;
  c.s = 0x7bff;  // ignored by decoding
  for (int j = 0; j < 32; ++j) c.qs[j] = static_cast<int8_t>(-j);
  const auto z = decode(DType::Q8_1, c);
  EXPECT_EQ(z[0], 0.0f);
  EXPECT_EQ(z[7], -3.5f);
}

TEST(QuantFormats, Q2_KHandBuilt) {
  BlockQ2_K b{};
  b.d = kHalfOne;
  b.dmin = kHalfHalf;
  std::memset(b.scales, 0x21, sizeof b.scales);  // scale 1, min 2
  b.scales[5] = 0x03;                            // sub-block 5: scale 3, min 0
  std::memset(b.qs, 0xe4, sizeof b.qs);          // 2-bit fields 0,1,2,3 at shifts 0,2,4,6
  const auto y = decode(DType::Q2_K, b);
  // Element e has q = (e % 128) / 32 (the shift step) and sub-block e / 16.
  EXPECT_EQ(y[0], -1.0f);    // 1·0 - 0.5·2
  EXPECT_EQ(y[40], 0.0f);    // q = 1: 1 - 1
  EXPECT_EQ(y[127], 2.0f);   // q = 3: 3 - 1
  EXPECT_EQ(y[85], 6.0f);    // sub-block 5, q = 2: 3·2 - 0
  EXPECT_EQ(y[200], 1.0f);   // (200 % 128) / 32 = 2: 2 - 1
}

TEST(QuantFormats, Q3_KHandBuilt) {
  BlockQ3_K b{};
  b.d = kHalfOne;
  std::memset(b.hmask, 0xff, sizeof b.hmask);  // high bit set everywhere: nothing subtracted
  b.hmask[0] = 0xfe;                           // ... except element 0 (bit 0 of hmask[0])
  std::memset(b.qs, 0xe4, sizeof b.qs);
  // Every 6-bit scale = 33 (low nibble 1, high bits 2) -> 33 - 32 = 1.
  std::memset(b.scales, 0x11, 8);
  std::memset(b.scales + 8, 0xaa, 4);
  b.scales[5] = 0x81;  // scale 13's low nibble (high nibble of byte 13 - 8) = 8 -> 40 - 32 = 8
  const auto y = decode(DType::Q3_K, b);
  EXPECT_EQ(y[0], -4.0f);   // q = 0, high bit clear: 0 - 4
  EXPECT_EQ(y[32], 1.0f);   // q = 1 (hmask[0] bit 1 still set)
  EXPECT_EQ(y[100], 3.0f);  // q = 3, scale 1
  EXPECT_EQ(y[210], 16.0f); // sub-block 13, q = (210 % 128) / 32 = 2, scale 8
}

TEST(QuantFormats, Q4_KHandBuilt) {
  BlockQ4_K b{};
  b.d = kHalfOne;
  b.dmin = kHalfOne;
  b.scales[0] = 2;     // sub-block 0 scale
  b.scales[4] = 1;     // sub-block 0 min
  b.scales[1] = 0x40;  // sub-block 1 scale 0, top bits 01 -> sub-block 5 scale bits 4-5
  b.scales[9] = 0x23;  // sub-block 5: scale low nibble 3, min low nibble 2
  std::memset(b.qs, 0x73, sizeof b.qs);  // low nibble 3, high nibble 7
  const auto y = decode(DType::Q4_K, b);
  EXPECT_EQ(y[0], 5.0f);     // 2·3 - 1
  EXPECT_EQ(y[40], 0.0f);    // sub-block 1: 0·7 - 0
  EXPECT_EQ(y[170], 131.0f); // sub-block 5 (high nibbles of chunk 2): (3 + 16)·7 - 2
  EXPECT_EQ(y[100], 0.0f);   // sub-block 3: scale 0, min 0
}

TEST(QuantFormats, Q5_KHandBuilt) {
  BlockQ5_K b{};
  b.d = kHalfOne;
  b.dmin = kHalfHalf;
  b.scales[3] = 1;  // sub-block 3: scale 1
  b.scales[7] = 4;  // sub-block 3: min 4
  std::memset(b.qs, 0x73, sizeof b.qs);
  b.qh[3] = 1 << 3;  // chunk 1, high-nibble half (bit 2·1 + 1), l = 3 -> element 64 + 32 + 3
  const auto y = decode(DType::Q5_K, b);
  EXPECT_EQ(y[99], 21.0f);  // 1·(7 + 16) - 0.5·4
  EXPECT_EQ(y[98], 5.0f);   // 1·7 - 2
  EXPECT_EQ(y[0], 0.0f);    // sub-block 0: scale 0, min 0
}

TEST(QuantFormats, Q6_KHandBuilt) {
  BlockQ6_K b{};
  b.d = kHalfHalf;
  std::memset(b.ql, 0x21, sizeof b.ql);  // low nibble 1, high nibble 2
  std::memset(b.qh, 0xe4, sizeof b.qh);  // 2-bit fields 0,1,2,3
  for (auto& s : b.scales) s = 1;
  b.scales[5] = -3;
  const auto y = decode(DType::Q6_K, b);
  EXPECT_EQ(y[0], -15.5f);   // q = 1 | 0 << 4 = 1 - 32 = -31; 0.5·1·-31
  EXPECT_EQ(y[40], -7.5f);   // l = 8 of the second quarter: 1 | 1 << 4 = 17 - 32 = -15
  EXPECT_EQ(y[80], -3.0f);   // l = 16 of the third quarter: scale 5 = -3, q = 2 | 2 << 4 - 32 = 2
  EXPECT_EQ(y[127], 9.0f);   // q = 2 | 3 << 4 = 50 - 32 = 18, scale 7 = 1
  EXPECT_EQ(y[200], 1.0f);   // second half, third quarter, l = 8: scale 12 = 1, q = 2
}

TEST(QuantFormats, Q8_KHandBuilt) {
  BlockQ8_K b{};
  b.d = 0.25f;
  for (int j = 0; j < 256; ++j) b.qs[j] = static_cast<int8_t>(j - 128);
  const auto y = decode(DType::Q8_K, b);
  EXPECT_EQ(y[0], -32.0f);
  EXPECT_EQ(y[255], 31.75f);
}

// ggml's quantize_row_q4_0_ref on x_j = j - 16, worked by hand: the largest magnitude is -16, so
// d = -16 / -8 = 2, id = 0.5, q_j = min(15, trunc((j - 16)·0.5 + 8.5)) = min(15, (j + 1) / 2).
TEST(QuantFormats, Q4_0ReferenceRoundingKnownBlock) {
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);
  BlockQ4_0 b{};
  quantize_row_ref(DType::Q4_0, x, &b, 32);
  EXPECT_EQ(b.d, kHalfTwo);
  EXPECT_EQ(b.qs[0], 0x80);   // q0 = 0, q16 = 8
  EXPECT_EQ(b.qs[1], 0x91);   // q1 = 1, q17 = 9
  EXPECT_EQ(b.qs[15], 0xf8);  // q15 = 8, q31 = min(15, 16) = 15
}

// ggml's quantize_row_q8_0_ref rounds half away from zero: with amax = 127, d = 1 exactly.
TEST(QuantFormats, Q8_0ReferenceRoundsHalfAwayFromZero) {
  float x[32] = {};
  x[0] = 127.0f;
  x[1] = 2.5f;
  x[2] = -2.5f;
  x[3] = 0.49f;
  BlockQ8_0 b{};
  quantize_row_ref(DType::Q8_0, x, &b, 32);
  EXPECT_EQ(b.d, kHalfOne);
  EXPECT_EQ(b.qs[0], 127);
  EXPECT_EQ(b.qs[1], 3);
  EXPECT_EQ(b.qs[2], -3);
  EXPECT_EQ(b.qs[3], 0);
}

// Blocks of random values, plus all-zero, constant and single-outlier blocks.
std::vector<float> test_rows(int64_t blocks, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(blocks * 32);
  for (auto& v : x) v = dist(rng);
  if (blocks >= 4) {
    std::fill(x.begin(), x.begin() + 32, 0.0f);
    std::fill(x.begin() + 32, x.begin() + 64, 0.7f);
    std::fill(x.begin() + 64, x.begin() + 96, 0.0f);
    x[64 + 5] = -3.0f;
  }
  return x;
}

// Error bound per element for the round-to-nearest 32-value formats, from the quantizer
// definitions (the K formats' search-based quantizers are bounded in quant_k_test.cpp):
// with d the f32 step, |x - q·d| ≤ d/2 when x/d lies in the representable range (plus one f32
// rounding of x·id: ≤ 2·u·|x|/d steps), and clamped elements (the positive end of Q4_0/Q5_0,
// whose range is [-8, 7]·d resp. [-16, 15]·d) err by their distance to the range, at most d.
// Decoding uses the f16 step d16 and offset m16, adding |q|·|d - d16| + |m - m16|.
TEST(QuantFormats, QuantizeDequantizeWithinHalfStep) {
  std::mt19937 rng(5);
  const double u = std::ldexp(1.0, -24);
  for (const QuantTraits& traits : quant_traits_table()) {
    if (!traits.quantize_ref || traits.block_elems != kQK) continue;
    SCOPED_TRACE(dtype_name(traits.type));
    for (int64_t blocks : {1, 4, 33}) {
      const auto x = test_rows(blocks, rng);
      const int64_t n = blocks * traits.block_elems;
      std::vector<uint8_t> q(blocks * traits.block_bytes);
      std::vector<float> y(n);
      quantize_row_ref(traits.type, x.data(), q.data(), n);
      dequantize_row(traits.type, q.data(), y.data(), n);
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const float* xb = x.data() + blk * 32;
        float mn = xb[0], mx = xb[0], amax = 0, signed_max = 0;
        for (int j = 0; j < 32; ++j) {
          mn = std::min(mn, xb[j]);
          mx = std::max(mx, xb[j]);
          if (std::fabs(xb[j]) > amax) {
            amax = std::fabs(xb[j]);
            signed_max = xb[j];
          }
        }
        // Step d, lowest code level lo·d + offset, number of levels, f16-stored step and offset.
        double d = 0, offset = 0;
        int levels = 0, lo = 0;
        switch (traits.type) {
          case DType::Q4_0: d = signed_max / -8.0f; lo = -8; levels = 16; break;
          case DType::Q5_0: d = signed_max / -16.0f; lo = -16; levels = 32; break;
          case DType::Q4_1: d = (mx - mn) / 15.0f; offset = mn; levels = 16; break;
          case DType::Q5_1: d = (mx - mn) / 31.0f; offset = mn; levels = 32; break;
          default: d = amax / 127.0f; lo = -127; levels = 255; break;  // Q8_0, Q8_1
        }
        const double d16 = f16_to_f32(f32_to_f16(static_cast<float>(d)));
        const double m16 = f16_to_f32(f32_to_f16(static_cast<float>(offset)));
        const double adj = std::fabs(d);
        for (int j = 0; j < 32; ++j) {
          const double xv = xb[j];
          // Distance from x to the representable range [lo, lo + levels - 1]·d + offset.
          const double a = offset + lo * d, b = offset + (lo + levels - 1) * d;
          const double range_lo = std::min(a, b), range_hi = std::max(a, b);
          const double outside = std::max({0.0, range_lo - xv, xv - range_hi});
          const double bound = std::max(adj / 2, outside) + 2 * u * std::fabs(xv) +
                               levels * std::fabs(d - d16) + std::fabs(offset - m16) +
                               4 * u * (std::fabs(xv) + adj);
          ASSERT_LE(std::fabs(y[blk * 32 + j] - xv), bound)
              << "block " << blk << " element " << j << " x=" << xv << " d=" << d;
        }
      }
    }
  }
}

TEST(QuantFormats, RejectsBadArguments) {
  float x[64] = {};
  uint8_t buf[256];
  EXPECT_THROW(dequantize_row(DType::Q4_0, buf, x, 33), InputError);
  EXPECT_THROW(dequantize_row(DType::I32, buf, x, 4), InputError);
  EXPECT_THROW(quantize_row_ref(DType::F16, x, buf, 64), InputError);
  EXPECT_THROW(quantize_row_ref(DType::Q4_K, x, buf, 64), InputError);
  EXPECT_THROW(quantize_row_ref(DType::Q8_0, x, buf, 31), InputError);
  try {
    dequantize_row(DType::Q6_K, buf, x, 100);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("Q6_K"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("256"), std::string::npos) << e.what();
  }
}

TEST(QuantFormats, DequantizeRowPassesPlainFloatTypesThrough) {
  const float x[3] = {1.5f, -2.0f, 0.25f};
  float y[3];
  dequantize_row(DType::F32, x, y, 3);
  EXPECT_EQ(std::memcmp(x, y, sizeof x), 0);
  const uint16_t h[3] = {kHalfOne, kHalfMinusOne, kHalfQuarter};
  dequantize_row(DType::F16, h, y, 3);
  EXPECT_EQ(y[1], -1.0f);
  const uint16_t bf[2] = {0x3f80, 0xc000};  // 1.0, -2.0
  dequantize_row(DType::BF16, bf, y, 2);
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[1], -2.0f);
}

}  // namespace
}  // namespace llmopt::kernels
