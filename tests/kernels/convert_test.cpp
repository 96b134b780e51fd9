// The SIMD conversions must equal the scalar core/half.h conversions bit for bit: every one of
// the 65536 16-bit patterns, and f32 inputs that cover every rounding case (random bit patterns,
// exact ties, subnormal results, overflow, NaN payloads), at odd lengths so the scalar tails run.
#include "kernels/convert.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "core/half.h"
#include "each_simd_target.h"

namespace llmopt::kernels {
namespace {

std::vector<uint16_t> all_16bit_patterns() {
  std::vector<uint16_t> v(65536);
  for (uint32_t i = 0; i < 65536; ++i) v[i] = static_cast<uint16_t>(i);
  return v;
}

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// f32 inputs: random bit patterns (all exponents, NaNs included) plus, for every half pattern,
// the exact f32 value and the values just above, below and exactly halfway to its neighbours.
std::vector<float> tricky_floats() {
  std::vector<float> v;
  std::mt19937 rng(1234);
  for (int i = 0; i < 200000; ++i) v.push_back(float_of(static_cast<uint32_t>(rng())));
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint32_t b = bits_of(f16_to_f32(static_cast<uint16_t>(h)));
    for (uint32_t delta : {0u, 1u, 0xfffu, 0x1000u, 0x1001u, 0x7fffu, 0x8000u, 0x8001u}) {
      v.push_back(float_of(b + delta));
      v.push_back(float_of(b - delta));
    }
  }
  for (uint32_t b = 0; b < (1u << 16); b += 7) v.push_back(float_of(b));  // f32 subnormals
  v.push_back(65504.0f);
  v.push_back(65519.99f);
  v.push_back(65520.0f);
  return v;
}

TEST(Convert, F16ToF32MatchesScalarOnAll65536Patterns) {
  testing::for_each_simd_target([&] {
    const auto src = all_16bit_patterns();
    std::vector<float> got(src.size()), want(src.size());
    convert_f16_to_f32(src.data(), got.data(), static_cast<int64_t>(src.size()));
    convert_f16_to_f32_ref(src.data(), want.data(), static_cast<int64_t>(src.size()));
    for (size_t i = 0; i < src.size(); ++i)
      ASSERT_EQ(bits_of(got[i]), bits_of(want[i])) << "half pattern " << i;
  });
}

TEST(Convert, Bf16ToF32MatchesScalarOnAll65536Patterns) {
  testing::for_each_simd_target([&] {
    const auto src = all_16bit_patterns();
    std::vector<float> got(src.size()), want(src.size());
    convert_bf16_to_f32(src.data(), got.data(), static_cast<int64_t>(src.size()));
    convert_bf16_to_f32_ref(src.data(), want.data(), static_cast<int64_t>(src.size()));
    for (size_t i = 0; i < src.size(); ++i)
      ASSERT_EQ(bits_of(got[i]), bits_of(want[i])) << "bf16 pattern " << i;
  });
}

TEST(Convert, F32ToF16MatchesScalarBitForBit) {
  testing::for_each_simd_target([&] {
    const auto src = tricky_floats();
    std::vector<uint16_t> got(src.size()), want(src.size());
    convert_f32_to_f16(src.data(), got.data(), static_cast<int64_t>(src.size()));
    convert_f32_to_f16_ref(src.data(), want.data(), static_cast<int64_t>(src.size()));
    for (size_t i = 0; i < src.size(); ++i)
      ASSERT_EQ(got[i], want[i]) << "f32 bits 0x" << std::hex << bits_of(src[i]);
  });
}

TEST(Convert, F32ToBf16MatchesScalarBitForBit) {
  testing::for_each_simd_target([&] {
    const auto src = tricky_floats();
    std::vector<uint16_t> got(src.size()), want(src.size());
    convert_f32_to_bf16(src.data(), got.data(), static_cast<int64_t>(src.size()));
    convert_f32_to_bf16_ref(src.data(), want.data(), static_cast<int64_t>(src.size()));
    for (size_t i = 0; i < src.size(); ++i)
      ASSERT_EQ(got[i], want[i]) << "f32 bits 0x" << std::hex << bits_of(src[i]);
  });
}

// Odd lengths exercise the scalar tails and must not touch memory past n (the guard stays).
TEST(Convert, OddLengthsWriteExactlyN) {
  testing::for_each_simd_target([&] {
    for (int64_t n : {0, 1, 7, 33, 172, 1000}) {
      std::vector<float> src(n);
      for (int64_t i = 0; i < n; ++i) src[i] = 0.37f * static_cast<float>(i) - 11.0f;
      std::vector<uint16_t> h(n + 1, 0xabcd), b(n + 1, 0xabcd);
      convert_f32_to_f16(src.data(), h.data(), n);
      convert_f32_to_bf16(src.data(), b.data(), n);
      EXPECT_EQ(h[n], 0xabcd) << n;
      EXPECT_EQ(b[n], 0xabcd) << n;
      std::vector<float> back(n + 1, -1.0f);
      convert_f16_to_f32(h.data(), back.data(), n);
      EXPECT_EQ(back[n], -1.0f) << n;
      for (int64_t i = 0; i < n; ++i) EXPECT_EQ(back[i], f16_to_f32(f32_to_f16(src[i]))) << i;
    }
  });
}

}  // namespace
}  // namespace llmopt::kernels
