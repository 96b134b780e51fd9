// The building blocks of a Llama layer that the native engine's prefill (CpuLlama::prefill,
// src/infer/forward_cpu.cpp, many rows at once) and its fused decode step (decode_step.cpp, one
// row, also the torch engine's CPU decode) share: written once, so that both compute the same
// function. Each block works on raw float rows; which thread runs which rows is the caller's
// business (every block's result depends only on its inputs, never on the thread count).
#pragma once
#include <algorithm>
#include <cstdint>

#include "infer/weights.h"
#include "kernels/vec_math.h"

namespace llmopt::infer::blocks {

// y[r] = RMSNorm(x[r]) · w for rows r in [r0, r1) of x, y [rows, D] (kernels::rms_norm_f32).
inline void rms_norm_rows(const float* x, const float* w, float* y, int64_t r0, int64_t r1, int64_t D,
                          float eps) {
  for (int64_t r = r0; r < r1; ++r) kernels::rms_norm_f32(x + r * D, w, y + r * D, D, eps);
}

// RoPE (rope_rotate_half) on heads [h0, h1) of one token's rows `v` [n_heads, hd], with that
// token's cos/sin [hd] (rope_angles).
inline void rope_heads(float* v, int64_t h0, int64_t h1, const float* cos, const float* sin, int64_t hd) {
  for (int64_t h = h0; h < h1; ++h) rope_rotate_half(v + h * hd, cos, sin, hd);
}

// Key/value cache of one layer: [n_kv_heads, capacity, head_dim] each.
struct LayerCache {
  float* k = nullptr;
  float* v = nullptr;
  int64_t capacity = 0;
  int64_t hd = 0;
  float* key(int64_t kv_head, int64_t pos) const { return k + (kv_head * capacity + pos) * hd; }
  float* value(int64_t kv_head, int64_t pos) const { return v + (kv_head * capacity + pos) * hd; }
  const float* keys(int64_t kv_head) const { return key(kv_head, 0); }
  const float* values(int64_t kv_head) const { return value(kv_head, 0); }
};

// Stores kv head `kv_head` of one token's (already rotated) key row k [n_kv, hd] and value row v
// at position `pos`.
inline void store_kv(const LayerCache& c, int64_t kv_head, int64_t pos, const float* k, const float* v) {
  std::copy_n(k + kv_head * c.hd, c.hd, c.key(kv_head, pos));
  std::copy_n(v + kv_head * c.hd, c.hd, c.value(kv_head, pos));
}

// First key a query at position `pos` sees: 0, or pos - W + 1 with a sliding window of W keys
// (Mistral; HF's and llama.cpp's mask: key k visible when pos - W < k <= pos).
inline int64_t first_key(int64_t pos, int64_t window) { return window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0; }

// Softmax of one query's scaled scores over keys [lo, n) (causal, and a sliding window when
// lo > 0): the rest of the row, up to `row_len`, is zeroed so that a GEMM over the whole row adds
// nothing from hidden keys.
inline void causal_softmax(float* scores, int64_t lo, int64_t n, int64_t row_len) {
  std::fill(scores, scores + lo, 0.0f);
  kernels::softmax_f32(scores + lo, n - lo);
  std::fill(scores + n, scores + row_len, 0.0f);
}

// Attention of one (rotated) query q [hd] over keys/values 0..n-1 of one kv head:
// out = softmax(scale · q·Kᵀ) V, with scores [n] as scratch. The decode step's attention; prefill
// computes the same per head for all its rows as two GEMMs around causal_softmax (faster for many
// rows than one query at a time).
inline void attend_one(const float* q, const float* keys, const float* values, int64_t n, int64_t hd,
                       float scale, float* scores, float* out) {
  for (int64_t j = 0; j < n; ++j) scores[j] = kernels::dot_f32(q, keys + j * hd, hd) * scale;
  kernels::softmax_f32(scores, n);
  std::fill_n(out, hd, 0.0f);
  for (int64_t j = 0; j < n; ++j) kernels::axpy_f32(scores[j], values + j * hd, out, hd);
}

}  // namespace llmopt::infer::blocks
