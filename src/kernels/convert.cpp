// SIMD bulk f16/bf16 <-> f32 conversions with Highway dynamic dispatch. All four are written
// with integer bit manipulation (plus one exact float add/sub for subnormals) rather than the
// F16C instructions, because the hardware converts signaling NaNs differently from
// core/half.h and some Highway fallback targets truncate instead of rounding.
#include "kernels/convert.h"

#include <cstring>

#include "core/half.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/convert.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace llmopt::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Half bits (in the low 16 bits of u32 lanes) -> f32 bits; mirrors core/half.h f16_to_f32.
template <class DU32, class VU32>
HWY_INLINE VU32 HalfBitsToFloatBits(DU32 du, VU32 h) {
  const hn::RebindToFloat<DU32> df;
  const auto shifted_exp = hn::Set(du, 0x7c00u << 13);
  auto o = hn::ShiftLeft<13>(hn::And(h, hn::Set(du, 0x7fffu)));  // exponent and mantissa
  const auto exp = hn::And(o, shifted_exp);
  o = hn::Add(o, hn::Set(du, (127u - 15u) << 23));
  // Inf/NaN: the exponent becomes 255 and the payload is kept as is (no quieting).
  const auto inf_nan = hn::Add(o, hn::Set(du, (128u - 16u) << 23));
  // Zero/subnormal: adding 2^-14's exponent then subtracting 2^-14 renormalizes exactly.
  const auto magic = hn::Set(df, 6.103515625e-05f);  // 2^-14 = 113 << 23 as float bits
  const auto sub = hn::BitCast(
      du, hn::Sub(hn::BitCast(df, hn::Add(o, hn::Set(du, 1u << 23))), magic));
  o = hn::IfThenElse(hn::RebindMask(du, hn::Eq(exp, shifted_exp)), inf_nan, o);
  o = hn::IfThenElse(hn::RebindMask(du, hn::Eq(exp, hn::Zero(du))), sub, o);
  return hn::Or(o, hn::ShiftLeft<16>(hn::And(h, hn::Set(du, 0x8000u))));
}

// f32 bits -> half bits in the low 16 bits of i32 lanes; mirrors core/half.h f32_to_f16.
template <class DI32, class VI32>
HWY_INLINE VI32 FloatBitsToHalfBits(DI32 di, VI32 u) {
  const hn::RebindToFloat<DI32> df;
  const auto abs = hn::And(u, hn::Set(di, 0x7fffffff));
  const auto sign = hn::And(hn::ShiftRight<16>(u), hn::Set(di, 0x8000));
  // Normal: round the mantissa to 10 bits, nearest even, then rebias 127 -> 15.
  const auto odd = hn::And(hn::ShiftRight<13>(abs), hn::Set(di, 1));
  auto normal = hn::Add(hn::Add(abs, hn::Set(di, 0xfff)), odd);
  normal = hn::ShiftRight<13>(hn::Sub(normal, hn::Set(di, 0x38000000)));
  // Subnormal or zero result: adding 0.5f aligns the 10 half mantissa bits at the bottom of
  // the float mantissa, and the float add rounds to nearest even exactly as required.
  const auto half_f = hn::Set(df, 0.5f);
  const auto sub = hn::Sub(hn::BitCast(di, hn::Add(hn::BitCast(df, abs), half_f)),
                           hn::BitCast(di, half_f));
  auto r = hn::IfThenElse(hn::Lt(abs, hn::Set(di, 0x38800000)), sub, normal);
  r = hn::IfThenElse(hn::Gt(abs, hn::Set(di, 0x477fefff)), hn::Set(di, 0x7c00), r);
  r = hn::IfThenElse(hn::Gt(abs, hn::Set(di, 0x7f800000)), hn::Set(di, 0x7e00), r);
  return hn::Or(sign, r);
}

void F16ToF32(const uint16_t* HWY_RESTRICT src, float* HWY_RESTRICT dst, int64_t n) {
  const hn::ScalableTag<uint32_t> du;
  const hn::Rebind<uint16_t, decltype(du)> du16;
  const size_t L = hn::Lanes(du);
  int64_t i = 0;
  for (; i + static_cast<int64_t>(L) <= n; i += L) {
    const auto h = hn::PromoteTo(du, hn::LoadU(du16, src + i));
    hn::StoreU(hn::BitCast(hn::RebindToFloat<decltype(du)>(), HalfBitsToFloatBits(du, h)),
               hn::RebindToFloat<decltype(du)>(), dst + i);
  }
  for (; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}

void Bf16ToF32(const uint16_t* HWY_RESTRICT src, float* HWY_RESTRICT dst, int64_t n) {
  const hn::ScalableTag<uint32_t> du;
  const hn::RebindToFloat<decltype(du)> df;
  const hn::Rebind<uint16_t, decltype(du)> du16;
  const size_t L = hn::Lanes(du);
  int64_t i = 0;
  for (; i + static_cast<int64_t>(L) <= n; i += L) {
    const auto bits = hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(du16, src + i)));
    hn::StoreU(hn::BitCast(df, bits), df, dst + i);
  }
  for (; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

void F32ToF16(const float* HWY_RESTRICT src, uint16_t* HWY_RESTRICT dst, int64_t n) {
  const hn::ScalableTag<int32_t> di;
  const hn::RebindToFloat<decltype(di)> df;
  const hn::Rebind<uint16_t, decltype(di)> du16;
  const size_t L = hn::Lanes(di);
  int64_t i = 0;
  for (; i + static_cast<int64_t>(L) <= n; i += L) {
    const auto h = FloatBitsToHalfBits(di, hn::BitCast(di, hn::LoadU(df, src + i)));
    hn::StoreU(hn::DemoteTo(du16, h), du16, dst + i);  // h < 65536: no saturation
  }
  for (; i < n; ++i) dst[i] = f32_to_f16(src[i]);
}

void F32ToBf16(const float* HWY_RESTRICT src, uint16_t* HWY_RESTRICT dst, int64_t n) {
  const hn::ScalableTag<uint32_t> du;
  const hn::RebindToFloat<decltype(du)> df;
  const hn::RebindToSigned<decltype(du)> di;
  const hn::Rebind<uint16_t, decltype(du)> du16;
  const size_t L = hn::Lanes(du);
  int64_t i = 0;
  for (; i + static_cast<int64_t>(L) <= n; i += L) {
    const auto u = hn::BitCast(du, hn::LoadU(df, src + i));
    const auto abs = hn::BitCast(di, hn::And(u, hn::Set(du, 0x7fffffffu)));
    const auto odd = hn::And(hn::ShiftRight<16>(u), hn::Set(du, 1u));
    const auto rounded = hn::ShiftRight<16>(hn::Add(hn::Add(u, hn::Set(du, 0x7fffu)), odd));
    const auto quiet_nan = hn::Or(hn::ShiftRight<16>(u), hn::Set(du, 0x40u));
    const auto is_nan = hn::RebindMask(du, hn::Gt(abs, hn::Set(di, 0x7f800000)));
    const auto r = hn::BitCast(di, hn::IfThenElse(is_nan, quiet_nan, rounded));
    hn::StoreU(hn::DemoteTo(du16, r), du16, dst + i);  // r < 65536: no saturation
  }
  for (; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

}  // namespace HWY_NAMESPACE
}  // namespace llmopt::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmopt::kernels {
HWY_EXPORT(F16ToF32);
HWY_EXPORT(Bf16ToF32);
HWY_EXPORT(F32ToF16);
HWY_EXPORT(F32ToBf16);

void convert_f16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  HWY_DYNAMIC_DISPATCH(F16ToF32)(src, dst, n);
}
void convert_bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  HWY_DYNAMIC_DISPATCH(Bf16ToF32)(src, dst, n);
}
void convert_f32_to_f16(const float* src, uint16_t* dst, int64_t n) {
  HWY_DYNAMIC_DISPATCH(F32ToF16)(src, dst, n);
}
void convert_f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
  HWY_DYNAMIC_DISPATCH(F32ToBf16)(src, dst, n);
}

void convert_f16_to_f32_ref(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}
void convert_bf16_to_f32_ref(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}
void convert_f32_to_f16_ref(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_f16(src[i]);
}
void convert_f32_to_bf16_ref(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}
}  // namespace llmopt::kernels
#endif  // HWY_ONCE
