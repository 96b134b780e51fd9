// Bulk conversions between f32 and the 16-bit float storage types (IEEE binary16 and bfloat16).
// The SIMD versions equal the scalar core/half.h conversions bit for bit on every input
// (round to nearest even; NaN handled exactly as core/half.h does), so files written with either
// path are identical. `*_ref` are the scalar twins used as test oracles.
#pragma once
#include <cstdint>

namespace llmopt::kernels {

// dst[i] = f16_to_f32(src[i]) for i in [0, n).
void convert_f16_to_f32(const uint16_t* src, float* dst, int64_t n);
// dst[i] = bf16_to_f32(src[i]).
void convert_bf16_to_f32(const uint16_t* src, float* dst, int64_t n);
// dst[i] = f32_to_f16(src[i]) (round to nearest even, overflow to inf, NaN -> sign|0x7e00).
void convert_f32_to_f16(const float* src, uint16_t* dst, int64_t n);
// dst[i] = f32_to_bf16(src[i]) (round to nearest even, NaN -> quiet NaN keeping the top bits).
void convert_f32_to_bf16(const float* src, uint16_t* dst, int64_t n);

void convert_f16_to_f32_ref(const uint16_t* src, float* dst, int64_t n);
void convert_bf16_to_f32_ref(const uint16_t* src, float* dst, int64_t n);
void convert_f32_to_f16_ref(const float* src, uint16_t* dst, int64_t n);
void convert_f32_to_bf16_ref(const float* src, uint16_t* dst, int64_t n);

}  // namespace llmopt::kernels
