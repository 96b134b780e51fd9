// Row-interleaved Q4_0 / Q4_K (see repack.h), Highway dynamic dispatch. The x86 targets (AVX2,
// AVX3, AVX3_DL) run 256-bit intrinsics (Highway 1.0.3 has no u8×i8 multiply-add op); the other
// targets run the scalar twin.
#include "kernels/repack.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/threads.h"
#include "kernels/quant_formats.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/repack.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

namespace llmopt::kernels::repack_detail {
#ifndef LLMOPT_KERNELS_REPACK_ONCE
#define LLMOPT_KERNELS_REPACK_ONCE

struct TileQ4_0 {
  uint16_t d[8];
  uint8_t qs[4][8][4];
};
static_assert(sizeof(TileQ4_0) == 8 * sizeof(BlockQ4_0));

struct TileQ4_K {
  uint16_t d[8];
  uint16_t dmin[8];
  uint8_t sc[8][8];     // [sub-block][row]
  uint8_t mn[4][8][2];  // [pair][row][which]
  uint8_t qs[4][8][8][4];
};
static_assert(sizeof(TileQ4_K) == 1184);

inline int64_t tile_bytes(DType t) { return t == DType::Q4_0 ? sizeof(TileQ4_0) : sizeof(TileQ4_K); }
inline int64_t blocks_per_row(DType t, int64_t k) { return k / dtype_block_elems(t); }

// ggml's 12-byte packing of eight 6-bit scales and mins (get_scale_min_k4 and its inverse).
inline void unpack_scales(const uint8_t* q, uint8_t* sc, uint8_t* mn) {
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      sc[j] = q[j] & 63;
      mn[j] = q[j + 4] & 63;
    } else {
      sc[j] = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
      mn[j] = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
  }
}
inline void pack_scales(const uint8_t* sc, const uint8_t* mn, uint8_t* q) {
  for (int j = 0; j < 4; ++j) {
    q[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    q[j + 4] = static_cast<uint8_t>((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
    q[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
  }
}

// Row r (of 8) of tile ↔ one ggml block.
inline void put_row(DType t, const uint8_t* blk, int r, uint8_t* tile) {
  if (t == DType::Q4_0) {
    const auto& b = *reinterpret_cast<const BlockQ4_0*>(blk);
    auto& T = *reinterpret_cast<TileQ4_0*>(tile);
    T.d[r] = b.d;
    for (int v = 0; v < 4; ++v) std::memcpy(T.qs[v][r], b.qs + 4 * v, 4);
  } else {
    const auto& b = *reinterpret_cast<const BlockQ4_K*>(blk);
    auto& T = *reinterpret_cast<TileQ4_K*>(tile);
    T.d[r] = b.d;
    T.dmin[r] = b.dmin;
    uint8_t sc[8], mn[8];
    unpack_scales(b.scales, sc, mn);
    for (int i = 0; i < 8; ++i) T.sc[i][r] = sc[i];
    for (int c = 0; c < 4; ++c) T.mn[c][r][0] = mn[2 * c], T.mn[c][r][1] = mn[2 * c + 1];
    for (int c = 0; c < 4; ++c)
      for (int v = 0; v < 8; ++v) std::memcpy(T.qs[c][v][r], b.qs + 32 * c + 4 * v, 4);
  }
}
inline void get_row(DType t, const uint8_t* tile, int r, uint8_t* blk) {
  if (t == DType::Q4_0) {
    auto& b = *reinterpret_cast<BlockQ4_0*>(blk);
    const auto& T = *reinterpret_cast<const TileQ4_0*>(tile);
    b.d = T.d[r];
    for (int v = 0; v < 4; ++v) std::memcpy(b.qs + 4 * v, T.qs[v][r], 4);
  } else {
    auto& b = *reinterpret_cast<BlockQ4_K*>(blk);
    const auto& T = *reinterpret_cast<const TileQ4_K*>(tile);
    b.d = T.d[r];
    b.dmin = T.dmin[r];
    uint8_t sc[8], mn[8];
    for (int i = 0; i < 8; ++i) sc[i] = T.sc[i][r];
    for (int c = 0; c < 4; ++c) mn[2 * c] = T.mn[c][r][0], mn[2 * c + 1] = T.mn[c][r][1];
    pack_scales(sc, mn, b.scales);
    for (int c = 0; c < 4; ++c)
      for (int v = 0; v < 8; ++v) std::memcpy(b.qs + 32 * c + 4 * v, T.qs[c][v][r], 4);
  }
}

// Rows [r0, r1) of the repacked matrix into ggml rows at dst.
inline void unpack_range(DType t, const uint8_t* packed, int64_t k, int64_t r0, int64_t r1, uint8_t* dst) {
  const int64_t nb = blocks_per_row(t, k), bb = dtype_block_bytes(t), tb = tile_bytes(t);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* tiles = packed + (r / 8) * nb * tb;
    uint8_t* row = dst + (r - r0) * nb * bb;
    for (int64_t j = 0; j < nb; ++j) get_row(t, tiles + j * tb, static_cast<int>(r % 8), row + j * bb);
  }
}

// The scalar twin on rows [r0, r1).
inline void gemv_ref_range(DType t, const uint8_t* w, const ActRow& x, const float* bias, float* y, int64_t r0,
                           int64_t r1) {
  const int64_t rb = dtype_bytes_for(t, x.k);
  std::vector<uint8_t> row(static_cast<size_t>(rb));
  for (int64_t r = r0; r < r1; ++r) {
    unpack_range(t, w, x.k, r, r + 1, row.data());
    const float v = t == DType::Q4_0 ? dot_act_q8_ref(t, row.data(), x.blocks.data(), x.k)
                                     : dot_act_q8k_ref(t, row.data(), x);
    y[r] = bias ? v + bias[r] : v;
  }
}

#endif  // LLMOPT_KERNELS_REPACK_ONCE
}  // namespace llmopt::kernels::repack_detail

#undef LLMOPT_RP_X86
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#include <immintrin.h>
#define LLMOPT_RP_X86 1
#else
#define LLMOPT_RP_X86 0
#endif

HWY_BEFORE_NAMESPACE();
namespace llmopt::kernels {
namespace HWY_NAMESPACE {
using repack_detail::TileQ4_0;
using repack_detail::TileQ4_K;

#if LLMOPT_RP_X86
HWY_INLINE __m256i Bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// 8 rows (one group) of Q4_0 against x's blocks: lane r = row r's sequential fma chain.
HWY_INLINE __m256 GroupQ4_0(const TileQ4_0* HWY_RESTRICT tiles, const ActBlock* HWY_RESTRICT x, int64_t nb) {
  const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t j = 0; j < nb; ++j) {
    const TileQ4_0& T = tiles[j];
    const ActBlock& a = x[j];
    __m256i s16 = _mm256_setzero_si256();
    for (int v = 0; v < 4; ++v) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(T.qs[v]));
      s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(_mm256_and_si256(w, m4), Bcast4(a.qs + 4 * v)));
      s16 = _mm256_add_epi16(
          s16, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w, 4), m4), Bcast4(a.qs + 16 + 4 * v)));
    }
    const __m256i i32 =
        _mm256_sub_epi32(_mm256_madd_epi16(s16, ones), _mm256_set1_epi32(8 * static_cast<int32_t>(a.sum)));
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(T.d)));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i32), _mm256_mul_ps(_mm256_set1_ps(a.d), dw), acc);
  }
  return acc;
}

// (s, s) in each i32 lane from 8 u8 scales.
HWY_INLINE __m256i Dup16(const uint8_t* p) {
  const __m256i s = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return _mm256_or_si256(s, _mm256_slli_epi32(s, 16));
}

// 8 rows of Q4_K against x's q8_K form (one step per 256): per super-block, Σ_sub sc·(codes·q)
// in int32, one fma; the mins' Σ_sub mn·bsum likewise into a second chain.
HWY_INLINE __m256 GroupQ4_K(const TileQ4_K* HWY_RESTRICT tiles, const ActRow& x, int64_t nsb) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
  for (int64_t s = 0; s < nsb; ++s) {
    const TileQ4_K& T = tiles[s];
    const int8_t* q = x.qk.data() + s * kQK_K;
    const int32_t* bs = x.bsum.data() + s * 8;
    __m256i isum = _mm256_setzero_si256(), msum = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
      for (int v = 0; v < 8; ++v) {
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(T.qs[c][v]));
        lo = _mm256_add_epi16(lo, _mm256_maddubs_epi16(_mm256_and_si256(w, m4), Bcast4(q + 64 * c + 4 * v)));
        hi = _mm256_add_epi16(
            hi, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w, 4), m4), Bcast4(q + 64 * c + 32 + 4 * v)));
      }
      isum = _mm256_add_epi32(isum, _mm256_add_epi32(_mm256_madd_epi16(lo, Dup16(T.sc[2 * c])),
                                                     _mm256_madd_epi16(hi, Dup16(T.sc[2 * c + 1]))));
      const __m256i mn = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(T.mn[c])));
      const int32_t bpair = static_cast<int32_t>((static_cast<uint32_t>(bs[2 * c]) & 0xffffu) |
                                                 (static_cast<uint32_t>(bs[2 * c + 1]) << 16));
      msum = _mm256_add_epi32(msum, _mm256_madd_epi16(mn, _mm256_set1_epi32(bpair)));
    }
    const __m256 dx = _mm256_set1_ps(x.dk[static_cast<size_t>(s)]);
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(T.d)));
    const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(T.dmin)));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dx, d), acc);
    accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_mul_ps(dx, dmin), accm);
  }
  return _mm256_sub_ps(acc, accm);
}

void GemvRepackedRows(DType t, const void* w, const ActRow& x, const float* bias, float* y, int64_t r0, int64_t r1) {
  const int64_t nb = repack_detail::blocks_per_row(t, x.k);
  const auto* base = static_cast<const uint8_t*>(w);
  const int64_t group_bytes = nb * repack_detail::tile_bytes(t);
  for (int64_t g = r0 / 8; g * 8 < r1; ++g) {
    const uint8_t* tiles = base + g * group_bytes;
    const __m256 v = t == DType::Q4_0 ? GroupQ4_0(reinterpret_cast<const TileQ4_0*>(tiles), x.blocks.data(), nb)
                                      : GroupQ4_K(reinterpret_cast<const TileQ4_K*>(tiles), x, nb);
    float* out = y + g * 8;
    if (bias != nullptr) {
      _mm256_storeu_ps(out, _mm256_add_ps(v, _mm256_loadu_ps(bias + g * 8)));
    } else {
      _mm256_storeu_ps(out, v);
    }
  }
}
#else
void GemvRepackedRows(DType t, const void* w, const ActRow& x, const float* bias, float* y, int64_t r0, int64_t r1) {
  repack_detail::gemv_ref_range(t, static_cast<const uint8_t*>(w), x, bias, y, r0, r1);
}
#endif

}  // namespace HWY_NAMESPACE
}  // namespace llmopt::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace llmopt::kernels {
HWY_EXPORT(GemvRepackedRows);

bool repack_supports(DType t, int64_t n, int64_t k) {
  return (t == DType::Q4_0 || t == DType::Q4_K) && n > 0 && n % kRepackRows == 0 && k > 0 &&
         k % dtype_block_elems(t) == 0;
}

int64_t repacked_bytes(DType t, int64_t n, int64_t k) {
  return n / kRepackRows * repack_detail::blocks_per_row(t, k) * repack_detail::tile_bytes(t);
}

void repack_rows(DType t, const void* src, void* dst, int64_t n, int64_t k) {
  LLMOPT_CHECK_INPUT(repack_supports(t, n, k),
                     "[kernels.repack] expected Q4_0 or Q4_K with a multiple of 8 rows and whole blocks, got {} "
                     "n={} k={}",
                     dtype_name(t), n, k);
  const int64_t nb = repack_detail::blocks_per_row(t, k), bb = dtype_block_bytes(t), tb = repack_detail::tile_bytes(t);
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint8_t*>(dst);
#pragma omp parallel for schedule(static) if (n * k >= (int64_t{1} << 20))
  for (int64_t g = 0; g < n / kRepackRows; ++g)
    for (int64_t j = 0; j < nb; ++j)
      for (int r = 0; r < kRepackRows; ++r)
        repack_detail::put_row(t, s + ((g * kRepackRows + r) * nb + j) * bb, r, d + (g * nb + j) * tb);
}

void unpack_rows(DType t, const void* packed, int64_t k, int64_t r0, int64_t r1, void* dst) {
  repack_detail::unpack_range(t, static_cast<const uint8_t*>(packed), k, r0, r1, static_cast<uint8_t*>(dst));
}

void gemv_repacked_rows(DType t, const void* w, const ActRow& x, const float* bias, float* y, int64_t r0,
                        int64_t r1) {
  if (r1 > r0) HWY_DYNAMIC_DISPATCH(GemvRepackedRows)(t, w, x, bias, y, r0, r1);
}

void gemv_repacked_rows_ref(DType t, const void* w, const ActRow& x, const float* bias, float* y, int64_t r0,
                            int64_t r1) {
  repack_detail::gemv_ref_range(t, static_cast<const uint8_t*>(w), x, bias, y, r0, r1);
}

void gemv_repacked(DType t, const void* w, const float* x, const float* bias, float* y, int64_t n, int64_t k,
                   int num_threads) {
  LLMOPT_CHECK_INPUT(repack_supports(t, n, k),
                     "[kernels.gemv_repacked] expected Q4_0 or Q4_K with a multiple of 8 rows and whole blocks, "
                     "got {} n={} k={}",
                     dtype_name(t), n, k);
  ActRow xa;
  xa.quantize(x, k);
  const int threads = n * k < (int64_t{1} << 15) ? 1 : (num_threads > 0 ? num_threads : llmopt::threads());
  constexpr int64_t kChunk = 32;  // rows per task, a multiple of 8
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  auto* rows = HWY_DYNAMIC_DISPATCH(GemvRepackedRows);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t c = 0; c < chunks; ++c) rows(t, w, xa, bias, y, c * kChunk, std::min(n, (c + 1) * kChunk));
}

}  // namespace llmopt::kernels
#endif  // HWY_ONCE
