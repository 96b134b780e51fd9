// GEMV kernels (see gemv.h). Per target: a row-range kernel templated on the weight storage
// type; the OpenMP split over row blocks happens outside the dispatched code.
#include "kernels/gemv.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "core/threads.h"
#include "kernels/gemv_quant.h"
#include "kernels/quant_formats.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/gemv.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

namespace llmopt::kernels::gemv_detail {
#ifndef LLMOPT_KERNELS_GEMV_ONCE
#define LLMOPT_KERNELS_GEMV_ONCE
// Weight storage tags shared by all targets.
struct F32Tag {
  using Elem = float;
  static float to_f32(float v) { return v; }
};
struct F16Tag {
  using Elem = uint16_t;
  static float to_f32(uint16_t v) { return f16_to_f32(v); }
};
struct Bf16Tag {
  using Elem = uint16_t;
  static float to_f32(uint16_t v) { return bf16_to_f32(v); }
};
#endif
}  // namespace llmopt::kernels::gemv_detail

HWY_BEFORE_NAMESPACE();
namespace llmopt::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using gemv_detail::Bf16Tag;
using gemv_detail::F16Tag;
using gemv_detail::F32Tag;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Loads Lanes(DF) weights starting at p as f32.
HWY_INLINE VF LoadWeights(DF df, const float* HWY_RESTRICT p, F32Tag) { return hn::LoadU(df, p); }
HWY_INLINE VF LoadWeights(DF df, const uint16_t* HWY_RESTRICT p, Bf16Tag) {
  const hn::RebindToUnsigned<DF> du32;
  const hn::Rebind<uint16_t, DF> du16;
  return hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du32, hn::LoadU(du16, p))));
}
HWY_INLINE VF LoadWeights(DF df, const uint16_t* HWY_RESTRICT p, F16Tag) {
  const hn::Rebind<hwy::float16_t, DF> dh;
  return hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p)));
}

// y[r] for r in [r0, r1). Per row: 4 vector accumulators over blocks of 4 vectors, then single
// vectors into the first accumulator, a fixed-shape tree reduction, then the scalar tail in
// order. The order depends only on k and Lanes(DF), never on r0/r1.
template <class Tag>
void GemvRows(const typename Tag::Elem* HWY_RESTRICT w, const float* HWY_RESTRICT x,
              const float* HWY_RESTRICT bias, float* HWY_RESTRICT y, int64_t r0, int64_t r1,
              int64_t k) {
  const DF df;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  for (int64_t r = r0; r < r1; ++r) {
    const typename Tag::Elem* HWY_RESTRICT row = w + r * k;
    auto acc0 = hn::Zero(df), acc1 = hn::Zero(df), acc2 = hn::Zero(df), acc3 = hn::Zero(df);
    int64_t i = 0;
    for (; i + 4 * L <= k; i += 4 * L) {
      acc0 = hn::MulAdd(LoadWeights(df, row + i, Tag()), hn::LoadU(df, x + i), acc0);
      acc1 = hn::MulAdd(LoadWeights(df, row + i + L, Tag()), hn::LoadU(df, x + i + L), acc1);
      acc2 = hn::MulAdd(LoadWeights(df, row + i + 2 * L, Tag()), hn::LoadU(df, x + i + 2 * L),
                        acc2);
      acc3 = hn::MulAdd(LoadWeights(df, row + i + 3 * L, Tag()), hn::LoadU(df, x + i + 3 * L),
                        acc3);
    }
    for (; i + L <= k; i += L)
      acc0 = hn::MulAdd(LoadWeights(df, row + i, Tag()), hn::LoadU(df, x + i), acc0);
    float sum = hn::GetLane(hn::SumOfLanes(df, hn::Add(hn::Add(acc0, acc1), hn::Add(acc2, acc3))));
    for (; i < k; ++i) sum += Tag::to_f32(row[i]) * x[i];
    y[r] = bias ? sum + bias[r] : sum;
  }
}

// Y[b, r] for b < M and r in [r0, r1): each weight vector is loaded once and multiplied with
// the M rows of X. Per (b, r): 2 accumulators over blocks of 2 vectors, single vectors into the
// first, then the scalar tail in order.
template <class Tag, int M>
void GemvBatchRows(const typename Tag::Elem* HWY_RESTRICT w, const float* HWY_RESTRICT x,
                   const float* HWY_RESTRICT bias, float* HWY_RESTRICT y, int64_t n, int64_t r0,
                   int64_t r1, int64_t k) {
  const DF df;
  const int64_t L = static_cast<int64_t>(hn::Lanes(df));
  for (int64_t r = r0; r < r1; ++r) {
    const typename Tag::Elem* HWY_RESTRICT row = w + r * k;
    VF acc0[M], acc1[M];
    for (int b = 0; b < M; ++b) acc0[b] = acc1[b] = hn::Zero(df);
    int64_t i = 0;
    for (; i + 2 * L <= k; i += 2 * L) {
      const VF w0 = LoadWeights(df, row + i, Tag());
      const VF w1 = LoadWeights(df, row + i + L, Tag());
      for (int b = 0; b < M; ++b) {
        acc0[b] = hn::MulAdd(w0, hn::LoadU(df, x + b * k + i), acc0[b]);
        acc1[b] = hn::MulAdd(w1, hn::LoadU(df, x + b * k + i + L), acc1[b]);
      }
    }
    for (; i + L <= k; i += L) {
      const VF w0 = LoadWeights(df, row + i, Tag());
      for (int b = 0; b < M; ++b) acc0[b] = hn::MulAdd(w0, hn::LoadU(df, x + b * k + i), acc0[b]);
    }
    float sums[M];
    for (int b = 0; b < M; ++b)
      sums[b] = hn::GetLane(hn::SumOfLanes(df, hn::Add(acc0[b], acc1[b])));
    for (; i < k; ++i) {
      const float wi = Tag::to_f32(row[i]);
      for (int b = 0; b < M; ++b) sums[b] += wi * x[b * k + i];
    }
    for (int b = 0; b < M; ++b) y[b * n + r] = bias ? sums[b] + bias[r] : sums[b];
  }
}

// Dispatch entry points: one per storage type, each taking a row range.
void GemvF32(const void* w, const float* x, const float* bias, float* y, int64_t r0, int64_t r1,
             int64_t k) {
  GemvRows<F32Tag>(static_cast<const float*>(w), x, bias, y, r0, r1, k);
}
void GemvF16(const void* w, const float* x, const float* bias, float* y, int64_t r0, int64_t r1,
             int64_t k) {
  GemvRows<F16Tag>(static_cast<const uint16_t*>(w), x, bias, y, r0, r1, k);
}
void GemvBf16(const void* w, const float* x, const float* bias, float* y, int64_t r0, int64_t r1,
              int64_t k) {
  GemvRows<Bf16Tag>(static_cast<const uint16_t*>(w), x, bias, y, r0, r1, k);
}

template <class Tag>
void GemvBatchAnyM(const void* w, const float* x, const float* bias, float* y, int64_t m,
                   int64_t n, int64_t r0, int64_t r1, int64_t k) {
  const auto* wt = static_cast<const typename Tag::Elem*>(w);
  switch (m) {
    case 1: return GemvBatchRows<Tag, 1>(wt, x, bias, y, n, r0, r1, k);
    case 2: return GemvBatchRows<Tag, 2>(wt, x, bias, y, n, r0, r1, k);
    case 3: return GemvBatchRows<Tag, 3>(wt, x, bias, y, n, r0, r1, k);
    case 4: return GemvBatchRows<Tag, 4>(wt, x, bias, y, n, r0, r1, k);
    case 5: return GemvBatchRows<Tag, 5>(wt, x, bias, y, n, r0, r1, k);
    case 6: return GemvBatchRows<Tag, 6>(wt, x, bias, y, n, r0, r1, k);
    case 7: return GemvBatchRows<Tag, 7>(wt, x, bias, y, n, r0, r1, k);
    default: return GemvBatchRows<Tag, 8>(wt, x, bias, y, n, r0, r1, k);
  }
}
void GemvBatchF32(const void* w, const float* x, const float* bias, float* y, int64_t m,
                  int64_t n, int64_t r0, int64_t r1, int64_t k) {
  GemvBatchAnyM<F32Tag>(w, x, bias, y, m, n, r0, r1, k);
}
void GemvBatchF16(const void* w, const float* x, const float* bias, float* y, int64_t m,
                  int64_t n, int64_t r0, int64_t r1, int64_t k) {
  GemvBatchAnyM<F16Tag>(w, x, bias, y, m, n, r0, r1, k);
}
void GemvBatchBf16(const void* w, const float* x, const float* bias, float* y, int64_t m,
                   int64_t n, int64_t r0, int64_t r1, int64_t k) {
  GemvBatchAnyM<Bf16Tag>(w, x, bias, y, m, n, r0, r1, k);
}

}  // namespace HWY_NAMESPACE
}  // namespace llmopt::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmopt::kernels {
HWY_EXPORT(GemvF32);
HWY_EXPORT(GemvF16);
HWY_EXPORT(GemvBf16);
HWY_EXPORT(GemvBatchF32);
HWY_EXPORT(GemvBatchF16);
HWY_EXPORT(GemvBatchBf16);

namespace {
// Rows per scheduling block: small enough to balance 2-16 threads on 768-row matrices, large
// enough that the per-block dispatch call is negligible (a block streams >= 16*k*2 bytes).
constexpr int64_t kRowsPerBlock = 16;
// Below this many multiply-adds the OpenMP fork/join (~1-5 µs) costs more than it saves.
constexpr int64_t kMinParallelWork = 1 << 15;

void check_args(const char* name, DType w_type, int64_t m, int64_t n, int64_t k) {
  LLMOPT_CHECK_INPUT(gemv_supports(w_type),
                     "[kernels.{}] weight type {} is not supported (expected F32, F16, BF16 or "
                     "a ggml block type)",
                     name, dtype_name(w_type));
  LLMOPT_CHECK_INPUT(n >= 0 && k >= 0, "[kernels.{}] sizes must be >= 0, got n={} k={}", name, n,
                     k);
  const int64_t block = dtype_block_elems(w_type);
  LLMOPT_CHECK_INPUT(k % block == 0,
                     "[kernels.{}] {} rows must hold whole blocks: k={} is not a multiple of {}",
                     name, dtype_name(w_type), k, block);
  LLMOPT_CHECK_INPUT(m >= 1 && m <= kMaxGemvBatch,
                     "[kernels.{}] batch m={} out of range (expected 1..{})", name, m,
                     kMaxGemvBatch);
}

int resolve_threads(int num_threads, int64_t m, int64_t n, int64_t k) {
  if (m * n * k < kMinParallelWork) return 1;
  return num_threads > 0 ? num_threads : llmopt::threads();
}

// Runs rows(r0, r1) over [0, n) in blocks of kRowsPerBlock; the static schedule gives each
// thread one contiguous slab of blocks, so each thread streams a contiguous part of W.
template <class Rows>
void for_row_blocks(int64_t n, int threads, Rows&& rows) {
  const int64_t blocks = (n + kRowsPerBlock - 1) / kRowsPerBlock;
  if (threads <= 1 || blocks <= 1) {
    rows(0, n);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t b = 0; b < blocks; ++b)
    rows(b * kRowsPerBlock, std::min(n, (b + 1) * kRowsPerBlock));
}

// Row r of W decoded to f32 (k values).
void decode_row(DType w_type, const void* w, int64_t r, int64_t k, float* out) {
  const int64_t row_bytes = dtype_bytes_for(w_type, k);
  dequantize_row(w_type, static_cast<const uint8_t*>(w) + r * row_bytes, out, k);
}
}  // namespace

bool gemv_supports(DType w_type) {
  return w_type == DType::F32 || w_type == DType::F16 || w_type == DType::BF16 ||
         find_quant_traits(w_type) != nullptr;
}

void gemv(DType w_type, const void* w, const float* x, const float* bias, float* y, int64_t n,
          int64_t k, int num_threads) {
  check_args("gemv", w_type, 1, n, k);
  const int threads = resolve_threads(num_threads, 1, n, k);
  if (gemv_quant_supports(w_type)) {
    for_row_blocks(n, threads, [&](int64_t r0, int64_t r1) {
      gemv_quant_rows(w_type, w, x, bias, y, r0, r1, k);
    });
    return;
  }
  if (find_quant_traits(w_type) != nullptr) {
    // Other block formats: decode each row block to f32 in a per-thread buffer (16·k floats,
    // cache resident), then run the F32 kernel on it. W is still read once, quantized.
    auto* f32_kernel = HWY_DYNAMIC_DISPATCH(GemvF32);
    for_row_blocks(n, threads, [&](int64_t r0, int64_t r1) {
      std::vector<float> decoded((r1 - r0) * k);
      for (int64_t r = r0; r < r1; ++r) decode_row(w_type, w, r, k, decoded.data() + (r - r0) * k);
      f32_kernel(decoded.data(), x, bias ? bias + r0 : nullptr, y + r0, 0, r1 - r0, k);
    });
    return;
  }
  auto* kernel = w_type == DType::F32   ? HWY_DYNAMIC_DISPATCH(GemvF32)
                 : w_type == DType::F16 ? HWY_DYNAMIC_DISPATCH(GemvF16)
                                        : HWY_DYNAMIC_DISPATCH(GemvBf16);
  for_row_blocks(n, threads, [&](int64_t r0, int64_t r1) { kernel(w, x, bias, y, r0, r1, k); });
}

void gemv_rows(DType w_type, const void* w, const float* x, const float* bias, float* y,
               int64_t r0, int64_t r1, int64_t k) {
  if (r1 <= r0) return;
  if (gemv_quant_supports(w_type)) {
    gemv_quant_rows(w_type, w, x, bias, y, r0, r1, k);
    return;
  }
  if (find_quant_traits(w_type) != nullptr) {
    auto* f32_kernel = HWY_DYNAMIC_DISPATCH(GemvF32);
    std::vector<float> decoded(kRowsPerBlock * k);
    for (int64_t b0 = r0; b0 < r1; b0 += kRowsPerBlock) {
      const int64_t b1 = std::min(r1, b0 + kRowsPerBlock);
      for (int64_t r = b0; r < b1; ++r) decode_row(w_type, w, r, k, decoded.data() + (r - b0) * k);
      f32_kernel(decoded.data(), x, bias ? bias + b0 : nullptr, y + b0, 0, b1 - b0, k);
    }
    return;
  }
  LLMOPT_CHECK_INPUT(w_type == DType::F32 || w_type == DType::F16 || w_type == DType::BF16,
                     "[kernels.gemv_rows] weight type {} is not supported", dtype_name(w_type));
  auto* kernel = w_type == DType::F32   ? HWY_DYNAMIC_DISPATCH(GemvF32)
                 : w_type == DType::F16 ? HWY_DYNAMIC_DISPATCH(GemvF16)
                                        : HWY_DYNAMIC_DISPATCH(GemvBf16);
  kernel(w, x, bias, y, r0, r1, k);
}

void gemv_batch(DType w_type, const void* w, const float* x, const float* bias, float* y,
                int64_t m, int64_t n, int64_t k, int num_threads) {
  check_args("gemv_batch", w_type, m, n, k);
  const int threads = resolve_threads(num_threads, m, n, k);
  if (gemv_quant_supports(w_type)) {
    // One row block of quantized W (16 rows, ≤ 14 KB for k = 768) stays in L1/L2 while the m
    // rows of X pass over it, so W is still streamed from memory once.
    for_row_blocks(n, threads, [&](int64_t r0, int64_t r1) {
      for (int64_t b = 0; b < m; ++b)
        gemv_quant_rows(w_type, w, x + b * k, bias, y + b * n, r0, r1, k);
    });
    return;
  }
  if (find_quant_traits(w_type) != nullptr) {  // decode row blocks once, as in gemv
    auto* f32_kernel = HWY_DYNAMIC_DISPATCH(GemvBatchF32);
    for_row_blocks(n, threads, [&](int64_t r0, int64_t r1) {
      std::vector<float> decoded((r1 - r0) * k);
      for (int64_t r = r0; r < r1; ++r) decode_row(w_type, w, r, k, decoded.data() + (r - r0) * k);
      f32_kernel(decoded.data(), x, bias ? bias + r0 : nullptr, y + r0, m, n, 0, r1 - r0, k);
    });
    return;
  }
  auto* kernel = w_type == DType::F32   ? HWY_DYNAMIC_DISPATCH(GemvBatchF32)
                 : w_type == DType::F16 ? HWY_DYNAMIC_DISPATCH(GemvBatchF16)
                                        : HWY_DYNAMIC_DISPATCH(GemvBatchBf16);
  for_row_blocks(n, threads,
                 [&](int64_t r0, int64_t r1) { kernel(w, x, bias, y, m, n, r0, r1, k); });
}

void gemv_ref(DType w_type, const void* w, const float* x, const float* bias, float* y, int64_t n,
              int64_t k) {
  gemv_batch_ref(w_type, w, x, bias, y, 1, n, k);
}

void gemv_batch_ref(DType w_type, const void* w, const float* x, const float* bias, float* y,
                    int64_t m, int64_t n, int64_t k) {
  check_args("gemv_batch_ref", w_type, m, n, k);
  std::vector<float> row(k);
  for (int64_t r = 0; r < n; ++r) {
    decode_row(w_type, w, r, k, row.data());
    for (int64_t b = 0; b < m; ++b) {
      float sum = 0.0f;
      for (int64_t i = 0; i < k; ++i) sum += row[i] * x[b * k + i];
      y[b * n + r] = bias ? sum + bias[r] : sum;
    }
  }
}

}  // namespace llmopt::kernels
#endif  // HWY_ONCE
