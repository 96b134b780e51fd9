// Scalar dequantizers and reference quantizers of the ggml block formats (see quant_formats.h).
// The arithmetic follows ggml's operation order ((d·scale)·q - dmin·min, etc.) so decoded values
// equal llama.cpp's bit for bit, and the quantizers reproduce ggml's *_ref rounding exactly:
// scale from the extreme value, float reciprocal, round by truncating x·id + offset.
#include "kernels/quant_formats.h"

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/half.h"
#include "kernels/convert.h"
#include "kernels/quant_k.h"

namespace llmopt::kernels {
namespace {

// ---- dequantizers: n is a multiple of the block size -----------------------------------------

void dequantize_q4_0(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ4_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = static_cast<float>((b[i].qs[j] & 0x0f) - 8) * d;
      y[j + kQK / 2] = static_cast<float>((b[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void dequantize_q4_1(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ4_1*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d);
    const float m = f16_to_f32(b[i].m);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = static_cast<float>(b[i].qs[j] & 0x0f) * d + m;
      y[j + kQK / 2] = static_cast<float>(b[i].qs[j] >> 4) * d + m;
    }
  }
}

// The 5th bit of element j is bit j of qh read as a little-endian u32.
uint32_t load_qh(const uint8_t qh[4]) {
  return static_cast<uint32_t>(qh[0]) | static_cast<uint32_t>(qh[1]) << 8 |
         static_cast<uint32_t>(qh[2]) << 16 | static_cast<uint32_t>(qh[3]) << 24;
}

void dequantize_q5_0(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ5_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d);
    const uint32_t qh = load_qh(b[i].qh);
    for (int j = 0; j < kQK / 2; ++j) {
      const int hi0 = static_cast<int>((qh >> j) & 1u) << 4;
      const int hi1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
      y[j] = static_cast<float>(((b[i].qs[j] & 0x0f) | hi0) - 16) * d;
      y[j + kQK / 2] = static_cast<float>(((b[i].qs[j] >> 4) | hi1) - 16) * d;
    }
  }
}

void dequantize_q5_1(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ5_1*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d);
    const float m = f16_to_f32(b[i].m);
    const uint32_t qh = load_qh(b[i].qh);
    for (int j = 0; j < kQK / 2; ++j) {
      const int hi0 = static_cast<int>((qh >> j) & 1u) << 4;
      const int hi1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
      y[j] = static_cast<float>((b[i].qs[j] & 0x0f) | hi0) * d + m;
      y[j + kQK / 2] = static_cast<float>((b[i].qs[j] >> 4) | hi1) * d + m;
    }
  }
}

void dequantize_q8_0(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(b[i].qs[j]) * d;
  }
}

void dequantize_q8_1(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ8_1*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(b[i].qs[j]) * d;
  }
}

// Q2_K: elements 128·h + 32·s + l (h half, s shift step 0..3, l 0..31) take 2 bits at shift
// 2·s of qs[32·h + l]; sub-block (16 elements) index 8·h + 2·s + (l >= 16).
void dequantize_q2_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ2_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    const float dmin = f16_to_f32(b[i].dmin);
    const uint8_t* q = b[i].qs;
    int sub = 0;
    for (int half = 0; half < 2; ++half, q += 32) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int part = 0; part < 2; ++part, ++sub) {
          const uint8_t sc = b[i].scales[sub];
          const float dl = d * static_cast<float>(sc & 0x0f);
          const float ml = dmin * static_cast<float>(sc >> 4);
          for (int l = 0; l < 16; ++l)
            *y++ = dl * static_cast<float>((q[l + 16 * part] >> shift) & 3) - ml;
        }
      }
    }
  }
}

// Q3_K 6-bit scale of sub-block s (0..15): low 4 bits are the low (s < 8) or high (s >= 8)
// nibble of scales[s % 8]; high 2 bits are bits 2·(s / 4) of scales[8 + s % 4].
int q3_k_scale(const uint8_t scales[12], int s) {
  const int low = s < 8 ? (scales[s] & 0x0f) : (scales[s - 8] >> 4);
  const int high = (scales[8 + s % 4] >> (2 * (s / 4))) & 3;
  return (low | (high << 4)) - 32;
}

// Q3_K: like Q2_K for the 2 low bits; the 3rd bit of element e is bit e / 32 of hmask[e % 32]
// and, when clear, 4 is subtracted.
void dequantize_q3_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ3_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    const uint8_t* q = b[i].qs;
    uint8_t mask = 1;
    int sub = 0;
    for (int half = 0; half < 2; ++half, q += 32) {
      for (int shift = 0; shift < 8; shift += 2, mask = static_cast<uint8_t>(mask << 1)) {
        for (int part = 0; part < 2; ++part, ++sub) {
          const float dl = d * static_cast<float>(q3_k_scale(b[i].scales, sub));
          for (int l = 16 * part; l < 16 * part + 16; ++l) {
            const int low = (q[l] >> shift) & 3;
            *y++ = dl * static_cast<float>(low - ((b[i].hmask[l] & mask) ? 0 : 4));
          }
        }
      }
    }
  }
}

// Q4_K/Q5_K 6-bit scale and min of sub-block j (0..7) packed in 12 bytes: for j < 4 the low 6
// bits of bytes j and j+4; for j >= 4 a nibble of byte j+4 plus the top 2 bits of bytes j-4
// (scale) and j (min).
void k4_scale_min(const uint8_t q[12], int j, int& scale, int& min) {
  if (j < 4) {
    scale = q[j] & 63;
    min = q[j + 4] & 63;
  } else {
    scale = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Q4_K: 4 chunks of 64 elements; chunk c takes low nibbles of qs[32c..32c+32) (sub-block 2c)
// then high nibbles (sub-block 2c+1).
void dequantize_q4_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ4_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    const float dmin = f16_to_f32(b[i].dmin);
    const uint8_t* q = b[i].qs;
    for (int chunk = 0; chunk < 4; ++chunk, q += 32) {
      int sc0, m0, sc1, m1;
      k4_scale_min(b[i].scales, 2 * chunk, sc0, m0);
      k4_scale_min(b[i].scales, 2 * chunk + 1, sc1, m1);
      const float d0 = d * static_cast<float>(sc0), min0 = dmin * static_cast<float>(m0);
      const float d1 = d * static_cast<float>(sc1), min1 = dmin * static_cast<float>(m1);
      for (int l = 0; l < 32; ++l) *y++ = d0 * static_cast<float>(q[l] & 0x0f) - min0;
      for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] >> 4) - min1;
    }
  }
}

// Q5_K: Q4_K plus a 5th bit: bit 2c (low-nibble half) or 2c+1 (high half) of qh[l].
void dequantize_q5_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ5_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    const float dmin = f16_to_f32(b[i].dmin);
    const uint8_t* q = b[i].qs;
    for (int chunk = 0; chunk < 4; ++chunk, q += 32) {
      int sc0, m0, sc1, m1;
      k4_scale_min(b[i].scales, 2 * chunk, sc0, m0);
      k4_scale_min(b[i].scales, 2 * chunk + 1, sc1, m1);
      const float d0 = d * static_cast<float>(sc0), min0 = dmin * static_cast<float>(m0);
      const float d1 = d * static_cast<float>(sc1), min1 = dmin * static_cast<float>(m1);
      const uint8_t bit0 = static_cast<uint8_t>(1u << (2 * chunk));
      const uint8_t bit1 = static_cast<uint8_t>(2u << (2 * chunk));
      for (int l = 0; l < 32; ++l)
        *y++ = d0 * static_cast<float>((q[l] & 0x0f) + ((b[i].qh[l] & bit0) ? 16 : 0)) - min0;
      for (int l = 0; l < 32; ++l)
        *y++ = d1 * static_cast<float>((q[l] >> 4) + ((b[i].qh[l] & bit1) ? 16 : 0)) - min1;
    }
  }
}

// Q6_K: two halves of 128; in half h, for l < 32, elements l, l+32, l+64, l+96 take the low
// nibble of ql[l], low nibble of ql[l+32], high nibble of ql[l], high nibble of ql[l+32]
// (ql offset 64h) and bits 0-1, 2-3, 4-5, 6-7 of qh[l] (offset 32h); scales[8h + l/16 + 2t].
void dequantize_q6_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ6_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int half = 0; half < 2; ++half, y += 128) {
      const uint8_t* ql = b[i].ql + 64 * half;
      const uint8_t* qh = b[i].qh + 32 * half;
      const int8_t* sc = b[i].scales + 8 * half;
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
        y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
        y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
        y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
      }
    }
  }
}

void dequantize_q8_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ8_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i, y += kQK_K) {
    float d;
    std::memcpy(&d, &b[i].d, 4);
    for (int j = 0; j < kQK_K; ++j) y[j] = d * static_cast<float>(b[i].qs[j]);
  }
}

// ---- reference quantizers (ggml quantize_row_*_ref) -------------------------------------------

// The element of largest magnitude, keeping its sign (first one on ties).
float signed_absmax(const float* x, int count) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < count; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

void min_max(const float* x, int count, float& min, float& max) {
  min = FLT_MAX;
  max = -FLT_MAX;
  for (int j = 0; j < count; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
}

// ggml's rounding for 4/5-bit codes: C conversion of the (non-negative) float to int8_t
// truncates, then the code is clamped to max.
uint8_t truncate_clamped(float v, int max) {
  return static_cast<uint8_t>(std::min(max, static_cast<int>(static_cast<int8_t>(v))));
}

// Symmetric 4-bit: d = max / -8 so the extreme maps to q = 0 (value -8·d); rounding is
// truncation of x·id + 8.5 (round half up), clamped to 15.
void quantize_q4_0(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ4_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    const float d = signed_absmax(x, kQK) / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK / 2; ++j) {
      const float x0 = x[j] * id;
      const float x1 = x[j + kQK / 2] * id;
      const auto q0 = truncate_clamped(x0 + 8.5f, 15);
      const auto q1 = truncate_clamped(x1 + 8.5f, 15);
      b[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

// Affine 4-bit: d = (max - min) / 15, m = min, q = trunc((x - min)·id + 0.5) clamped to 15.
void quantize_q4_1(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ4_1*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float min, max;
    min_max(x, kQK, min, max);
    const float d = (max - min) / 15;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    b[i].m = f32_to_f16(min);
    for (int j = 0; j < kQK / 2; ++j) {
      const float x0 = (x[j] - min) * id;
      const float x1 = (x[j + kQK / 2] - min) * id;
      const auto q0 = truncate_clamped(x0 + 0.5f, 15);
      const auto q1 = truncate_clamped(x1 + 0.5f, 15);
      b[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void store_qh(uint32_t qh, uint8_t out[4]) {
  for (int k = 0; k < 4; ++k) out[k] = static_cast<uint8_t>(qh >> (8 * k));
}

// Symmetric 5-bit: d = max / -16, q = trunc(x·id + 16.5) clamped to 31.
void quantize_q5_0(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ5_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    const float d = signed_absmax(x, kQK) / -16;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const float x0 = x[j] * id;
      const float x1 = x[j + kQK / 2] * id;
      const auto q0 = truncate_clamped(x0 + 16.5f, 31);
      const auto q1 = truncate_clamped(x1 + 16.5f, 31);
      b[i].qs[j] = static_cast<uint8_t>((q0 & 0x0f) | ((q1 & 0x0f) << 4));
      qh |= static_cast<uint32_t>((q0 & 0x10) >> 4) << j;
      qh |= static_cast<uint32_t>((q1 & 0x10) >> 4) << (j + kQK / 2);
    }
    store_qh(qh, b[i].qh);
  }
}

// Affine 5-bit: d = (max - min) / 31, m = min, q = trunc((x - min)·id + 0.5) (no clamp, as ggml).
void quantize_q5_1(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ5_1*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float min, max;
    min_max(x, kQK, min, max);
    const float d = (max - min) / 31;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    b[i].m = f32_to_f16(min);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const float x0 = (x[j] - min) * id;
      const float x1 = (x[j + kQK / 2] - min) * id;
      const auto q0 = static_cast<uint8_t>(x0 + 0.5f);
      const auto q1 = static_cast<uint8_t>(x1 + 0.5f);
      b[i].qs[j] = static_cast<uint8_t>((q0 & 0x0f) | ((q1 & 0x0f) << 4));
      qh |= static_cast<uint32_t>((q0 & 0x10) >> 4) << j;
      qh |= static_cast<uint32_t>((q1 & 0x10) >> 4) << (j + kQK / 2);
    }
    store_qh(qh, b[i].qh);
  }
}

float absmax(const float* x, int count) {
  float amax = 0.0f;
  for (int j = 0; j < count; ++j) amax = std::max(amax, std::fabs(x[j]));
  return amax;
}

// Symmetric 8-bit: d = amax / 127, q = roundf(x·id) (half away from zero).
void quantize_q8_0(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    const float d = absmax(x, kQK) / 127;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK; ++j) b[i].qs[j] = static_cast<int8_t>(std::roundf(x[j] * id));
  }
}

// Q8_0 plus s = f16(d·Σq) (d the f32 scale before rounding to f16, as ggml).
void quantize_q8_1(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8_1*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    const float d = absmax(x, kQK) / 127;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    int sum = 0;
    for (int j = 0; j < kQK; ++j) {
      b[i].qs[j] = static_cast<int8_t>(std::roundf(x[j] * id));
      sum += b[i].qs[j];
    }
    b[i].s = f32_to_f16(static_cast<float>(sum) * d);
  }
}

constexpr std::array<QuantTraits, 12> kTraits = {{
    {DType::Q4_0, kQK, sizeof(BlockQ4_0), dequantize_q4_0, quantize_q4_0, detail::quantize_q4_0_weighted},
    {DType::Q4_1, kQK, sizeof(BlockQ4_1), dequantize_q4_1, quantize_q4_1, detail::quantize_q4_1_weighted},
    {DType::Q5_0, kQK, sizeof(BlockQ5_0), dequantize_q5_0, quantize_q5_0, detail::quantize_q5_0_weighted},
    {DType::Q5_1, kQK, sizeof(BlockQ5_1), dequantize_q5_1, quantize_q5_1, detail::quantize_q5_1_weighted},
    {DType::Q8_0, kQK, sizeof(BlockQ8_0), dequantize_q8_0, quantize_q8_0, nullptr},
    {DType::Q8_1, kQK, sizeof(BlockQ8_1), dequantize_q8_1, quantize_q8_1, nullptr},
    {DType::Q2_K, kQK_K, sizeof(BlockQ2_K), dequantize_q2_k, detail::quantize_q2_k_ref,
     detail::quantize_q2_k_weighted},
    {DType::Q3_K, kQK_K, sizeof(BlockQ3_K), dequantize_q3_k, detail::quantize_q3_k_ref,
     detail::quantize_q3_k_weighted},
    {DType::Q4_K, kQK_K, sizeof(BlockQ4_K), dequantize_q4_k, detail::quantize_q4_k_ref,
     detail::quantize_q4_k_weighted},
    {DType::Q5_K, kQK_K, sizeof(BlockQ5_K), dequantize_q5_k, detail::quantize_q5_k_ref,
     detail::quantize_q5_k_weighted},
    {DType::Q6_K, kQK_K, sizeof(BlockQ6_K), dequantize_q6_k, detail::quantize_q6_k_ref,
     detail::quantize_q6_k_weighted},
    {DType::Q8_K, kQK_K, sizeof(BlockQ8_K), dequantize_q8_k, detail::quantize_q8_k_ref, nullptr},
}};

void check_multiple(const char* what, DType t, int64_t n, int64_t block) {
  LLMOPT_CHECK_INPUT(n >= 0 && n % block == 0,
                     "[kernels.{}] {} elements is not a multiple of the {} block size {}", what, n,
                     dtype_name(t), block);
}

}  // namespace

std::span<const QuantTraits> quant_traits_table() { return kTraits; }

const QuantTraits* find_quant_traits(DType t) {
  for (const auto& traits : kTraits)
    if (traits.type == t) return &traits;
  return nullptr;
}

void dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  switch (t) {
    case DType::F32:
      LLMOPT_CHECK_INPUT(n >= 0, "[kernels.dequantize_row] negative element count {}", n);
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case DType::F16:
      LLMOPT_CHECK_INPUT(n >= 0, "[kernels.dequantize_row] negative element count {}", n);
      convert_f16_to_f32(static_cast<const uint16_t*>(src), dst, n);
      return;
    case DType::BF16:
      LLMOPT_CHECK_INPUT(n >= 0, "[kernels.dequantize_row] negative element count {}", n);
      convert_bf16_to_f32(static_cast<const uint16_t*>(src), dst, n);
      return;
    default: break;
  }
  const QuantTraits* traits = find_quant_traits(t);
  LLMOPT_CHECK_INPUT(traits != nullptr,
                     "[kernels.dequantize_row] cannot decode dtype {} (expected F32, F16, BF16 "
                     "or a block-quantized type)",
                     dtype_name(t));
  check_multiple("dequantize_row", t, n, traits->block_elems);
  traits->dequantize(src, dst, n);
}

bool has_quantize_ref(DType t) {
  const QuantTraits* traits = find_quant_traits(t);
  return traits != nullptr && traits->quantize_ref != nullptr;
}

void quantize_row_ref(DType t, const float* src, void* dst, int64_t n) {
  LLMOPT_CHECK_INPUT(has_quantize_ref(t),
                     "[kernels.quantize_row_ref] no reference quantizer for dtype {} (available: "
                     "every ggml block type: Q4_0..Q8_1, Q2_K..Q8_K)",
                     dtype_name(t));
  const QuantTraits* traits = find_quant_traits(t);
  check_multiple("quantize_row_ref", t, n, traits->block_elems);
  traits->quantize_ref(src, dst, n);
}

bool has_quantize_weighted(DType t) {
  const QuantTraits* traits = find_quant_traits(t);
  return traits != nullptr && traits->quantize_weighted != nullptr;
}

void quantize_row_weighted(DType t, const float* src, void* dst, int64_t n, const float* importance) {
  LLMOPT_CHECK_INPUT(has_quantize_ref(t),
                     "[kernels.quantize_row_weighted] no quantizer for dtype {} (expected a ggml "
                     "block type)",
                     dtype_name(t));
  const QuantTraits* traits = find_quant_traits(t);
  check_multiple("quantize_row_weighted", t, n, traits->block_elems);
  if (importance == nullptr || traits->quantize_weighted == nullptr || n == 0)
    traits->quantize_ref(src, dst, n);
  else
    traits->quantize_weighted(src, dst, n, importance);
}

}  // namespace llmopt::kernels
