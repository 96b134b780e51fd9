// Quantized dot products (see gemv_quant.h), Highway dynamic dispatch. Per block of 32: the int8
// or 4-bit codes are widened to i32 and converted to f32 one vector at a time, multiplied with x
// into a block accumulator, which is then scaled by d into the row accumulator. Lanes(f32) ≤ 32
// on every target Highway compiles here, so a vector never straddles two blocks.
#include "kernels/gemv_quant.h"

#include <cstring>

#include "core/half.h"
#include "kernels/quant_formats.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/gemv_quant.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace llmopt::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
// A Q4_0 byte group of Lanes(DF) must fit in the 16 code bytes of one block.
static_assert(HWY_MAX_BYTES / sizeof(float) <= kQK / 2, "vector wider than half a block");

// f16 block scale -> f32 without core/half.h's subnormal loop: placing the 15 exponent and
// mantissa bits at the top of an f32 and multiplying by 2^112 rebiases the exponent and
// renormalizes subnormals exactly in one multiply. Inf/NaN (exponent 31) take the exact path.
HWY_INLINE float ScaleToF32(uint16_t h) {
  if (HWY_UNLIKELY((h & 0x7c00u) == 0x7c00u)) return f16_to_f32(h);
  const uint32_t bits = static_cast<uint32_t>(h & 0x7fffu) << 13;
  float magnitude;
  std::memcpy(&magnitude, &bits, 4);
  magnitude *= 0x1p112f;
  return (h & 0x8000u) ? -magnitude : magnitude;
}

// Σ_j q_j·x_j of one Q8_0 block as a vector of partial sums.
HWY_INLINE hn::Vec<DF> BlockSumQ8_0(const BlockQ8_0& block, const float* HWY_RESTRICT x) {
  const DF df;
  const hn::RebindToSigned<DF> di32;
  const hn::Rebind<int8_t, DF> di8;
  const int L = static_cast<int>(hn::Lanes(df));
  auto sum = hn::Zero(df);
  for (int j = 0; j < kQK; j += L) {
    const auto q = hn::ConvertTo(df, hn::PromoteTo(di32, hn::LoadU(di8, block.qs + j)));
    sum = hn::MulAdd(q, hn::LoadU(df, x + j), sum);
  }
  return sum;
}

// Σ_j (q_j - 8)·x_j of one Q4_0 block; the byte at qs[j] holds element j (low nibble) and
// element j + 16 (high nibble).
HWY_INLINE hn::Vec<DF> BlockSumQ4_0(const BlockQ4_0& block, const float* HWY_RESTRICT x) {
  const DF df;
  const hn::RebindToSigned<DF> di32;
  const hn::Rebind<uint8_t, DF> du8;
  const int L = static_cast<int>(hn::Lanes(df));
  const auto low_mask = hn::Set(di32, 0x0f);
  const auto eight = hn::Set(di32, 8);
  auto sum = hn::Zero(df);
  for (int j = 0; j < kQK / 2; j += L) {
    const auto bytes = hn::PromoteTo(di32, hn::LoadU(du8, block.qs + j));
    const auto lo = hn::ConvertTo(df, hn::Sub(hn::And(bytes, low_mask), eight));
    const auto hi = hn::ConvertTo(df, hn::Sub(hn::ShiftRight<4>(bytes), eight));
    sum = hn::MulAdd(lo, hn::LoadU(df, x + j), sum);
    sum = hn::MulAdd(hi, hn::LoadU(df, x + j + kQK / 2), sum);
  }
  return sum;
}

// Σ_b d_b·(block sum b): even blocks into one accumulator and odd blocks into another, two
// blocks per iteration so their independent work overlaps. The order is fixed for a given k.
template <class Block, class BlockSum>
HWY_INLINE float DotBlocks(const void* w_row, const float* HWY_RESTRICT x, int64_t k,
                           BlockSum block_sum) {
  const DF df;
  const auto* blocks = static_cast<const Block*>(w_row);
  const int64_t count = k / kQK;
  auto acc_even = hn::Zero(df), acc_odd = hn::Zero(df);
  int64_t b = 0;
  for (; b + 2 <= count; b += 2) {
    const auto s0 = block_sum(blocks[b], x + b * kQK);
    const auto s1 = block_sum(blocks[b + 1], x + (b + 1) * kQK);
    acc_even = hn::MulAdd(hn::Set(df, ScaleToF32(blocks[b].d)), s0, acc_even);
    acc_odd = hn::MulAdd(hn::Set(df, ScaleToF32(blocks[b + 1].d)), s1, acc_odd);
  }
  if (b < count)
    acc_even = hn::MulAdd(hn::Set(df, ScaleToF32(blocks[b].d)), block_sum(blocks[b], x + b * kQK),
                          acc_even);
  return hn::GetLane(hn::SumOfLanes(df, hn::Add(acc_even, acc_odd)));
}

float DotQ8_0(const void* w_row, const float* HWY_RESTRICT x, int64_t k) {
  return DotBlocks<BlockQ8_0>(w_row, x, k, [](const BlockQ8_0& blk, const float* xb) {
    return BlockSumQ8_0(blk, xb);
  });
}

float DotQ4_0(const void* w_row, const float* HWY_RESTRICT x, int64_t k) {
  return DotBlocks<BlockQ4_0>(w_row, x, k, [](const BlockQ4_0& blk, const float* xb) {
    return BlockSumQ4_0(blk, xb);
  });
}

// Σ_j (q_j - 16)·x_j of one Q5_0 block: like Q4_0, plus the 5th bit of element j from bit j of
// qh (little-endian u32), extracted for all lanes at once with a per-lane shift.
HWY_INLINE hn::Vec<DF> BlockSumQ5_0(const BlockQ5_0& block, const float* HWY_RESTRICT x) {
  const DF df;
  const hn::RebindToSigned<DF> di32;
  const hn::RebindToUnsigned<DF> du32;
  const hn::Rebind<uint8_t, DF> du8;
  const int L = static_cast<int>(hn::Lanes(df));
  uint32_t qh_bits;
  std::memcpy(&qh_bits, block.qh, 4);  // little-endian hosts only (x86, Arm)
  const auto qh = hn::Set(du32, qh_bits);
  const auto one = hn::Set(du32, 1u);
  const auto low_mask = hn::Set(di32, 0x0f);
  const auto sixteen = hn::Set(di32, 16);
  auto sum = hn::Zero(df);
  for (int j = 0; j < kQK / 2; j += L) {
    const auto lane = hn::Iota(du32, static_cast<uint32_t>(j));
    const auto high_lo = hn::BitCast(di32, hn::ShiftLeft<4>(hn::And(qh >> lane, one)));
    const auto high_hi =
        hn::BitCast(di32, hn::ShiftLeft<4>(hn::And(qh >> hn::Add(lane, hn::Set(du32, 16u)), one)));
    const auto bytes = hn::PromoteTo(di32, hn::LoadU(du8, block.qs + j));
    const auto lo = hn::ConvertTo(df, hn::Sub(hn::Or(hn::And(bytes, low_mask), high_lo), sixteen));
    const auto hi = hn::ConvertTo(df, hn::Sub(hn::Or(hn::ShiftRight<4>(bytes), high_hi), sixteen));
    sum = hn::MulAdd(lo, hn::LoadU(df, x + j), sum);
    sum = hn::MulAdd(hi, hn::LoadU(df, x + j + kQK / 2), sum);
  }
  return sum;
}

float DotQ5_0(const void* w_row, const float* HWY_RESTRICT x, int64_t k) {
  return DotBlocks<BlockQ5_0>(w_row, x, k, [](const BlockQ5_0& blk, const float* xb) {
    return BlockSumQ5_0(blk, xb);
  });
}

float DotQuant(DType w_type, const void* w_row, const float* x, int64_t k) {
  switch (w_type) {
    case DType::Q8_0: return DotQ8_0(w_row, x, k);
    case DType::Q5_0: return DotQ5_0(w_row, x, k);
    default: return DotQ4_0(w_row, x, k);
  }
}

void GemvQuantRows(DType w_type, const void* w, const float* x, const float* bias, float* y,
                   int64_t r0, int64_t r1, int64_t k) {
  const int64_t block_bytes = w_type == DType::Q8_0   ? sizeof(BlockQ8_0)
                              : w_type == DType::Q5_0 ? sizeof(BlockQ5_0)
                                                      : sizeof(BlockQ4_0);
  const int64_t row_bytes = k / kQK * block_bytes;
  const auto* base = static_cast<const uint8_t*>(w);
  for (int64_t r = r0; r < r1; ++r) {
    const float sum = DotQuant(w_type, base + r * row_bytes, x, k);
    y[r] = bias ? sum + bias[r] : sum;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace llmopt::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmopt::kernels {
HWY_EXPORT(GemvQuantRows);
HWY_EXPORT(DotQuant);

bool gemv_quant_supports(DType w_type) {
  return w_type == DType::Q8_0 || w_type == DType::Q4_0 || w_type == DType::Q5_0;
}

float dot_quant(DType w_type, const void* w_row, const float* x, int64_t k) {
  return HWY_DYNAMIC_DISPATCH(DotQuant)(w_type, w_row, x, k);
}

void gemv_quant_rows(DType w_type, const void* w, const float* x, const float* bias, float* y,
                     int64_t r0, int64_t r1, int64_t k) {
  HWY_DYNAMIC_DISPATCH(GemvQuantRows)(w_type, w, x, bias, y, r0, r1, k);
}

float dot_quant_ref(DType w_type, const void* w_row, const float* x, int64_t k) {
  float sum = 0.0f;
  for (int64_t b = 0; b < k / kQK; ++b, x += kQK) {
    float block_sum = 0.0f;
    float d = 0.0f;
    if (w_type == DType::Q8_0) {
      const auto& blk = static_cast<const BlockQ8_0*>(w_row)[b];
      d = f16_to_f32(blk.d);
      for (int j = 0; j < kQK; ++j) block_sum += static_cast<float>(blk.qs[j]) * x[j];
    } else if (w_type == DType::Q5_0) {
      const auto& blk = static_cast<const BlockQ5_0*>(w_row)[b];
      d = f16_to_f32(blk.d);
      const uint32_t qh = static_cast<uint32_t>(blk.qh[0]) | static_cast<uint32_t>(blk.qh[1]) << 8 |
                          static_cast<uint32_t>(blk.qh[2]) << 16 |
                          static_cast<uint32_t>(blk.qh[3]) << 24;
      for (int j = 0; j < kQK / 2; ++j) {
        const int lo = (blk.qs[j] & 0x0f) | static_cast<int>((qh >> j) & 1u) << 4;
        const int hi = (blk.qs[j] >> 4) | static_cast<int>((qh >> (j + 16)) & 1u) << 4;
        block_sum += static_cast<float>(lo - 16) * x[j];
        block_sum += static_cast<float>(hi - 16) * x[j + kQK / 2];
      }
    } else {
      const auto& blk = static_cast<const BlockQ4_0*>(w_row)[b];
      d = f16_to_f32(blk.d);
      for (int j = 0; j < kQK / 2; ++j) {
        block_sum += static_cast<float>((blk.qs[j] & 0x0f) - 8) * x[j];
        block_sum += static_cast<float>((blk.qs[j] >> 4) - 8) * x[j + kQK / 2];
      }
    }
    sum += d * block_sum;
  }
  return sum;
}
}  // namespace llmopt::kernels
#endif  // HWY_ONCE
