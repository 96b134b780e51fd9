// CpuLlama as an infer::Engine: its KV cache, batched prefill (OpenBLAS GEMMs over the rows,
// attention per head as two GEMMs with a causal softmax between them) and decode (the fused step
// of decode_step.cpp). Prefill and decode build a layer from the same blocks (infer/blocks.h).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "infer/blas.h"
#include "infer/blocks.h"
#include "infer/llama_cpu.h"
#include "kernels/gemm_quant.h"
#include "kernels/gemv.h"
#include "kernels/gemv_intn.h"
#include "kernels/quant_formats.h"
#include "kernels/repack.h"
#include "kernels/vec_math.h"

namespace llmopt::infer {
namespace {

// Element-wise work of a prefill this small runs on the calling thread: waking OpenMP workers
// between OpenBLAS calls costs more than it saves and their spinning steals OpenBLAS's cores
// (the same threshold as the torch engine's, model/llama.cpp).
constexpr int64_t kParallelElems = int64_t{1} << 20;

// Rows of a packed weight dequantized per GEMM tile (about 1 MiB of f32 in cache).
constexpr int64_t kTileFloats = int64_t{1} << 18;

// Y[T×n] = X[T×k]·Wᵀ + bias for an int-N / NF4 projection (Matrix::intn / nf4): tiles of rows
// dequantized into f32 (kernels/gemv_intn.h) and multiplied into the tile's output columns; no
// f32 copy of the weight is kept.
void gemm_packed_layer(const Matrix& m, const float* x, float* y, int64_t T) {
  const int64_t rows = std::max<int64_t>(16, std::min<int64_t>(m.n, kTileFloats / m.k));
  std::vector<float> tile(static_cast<size_t>(rows * m.k));
  for (int64_t r0 = 0; r0 < m.n; r0 += rows) {
    const int64_t nr = std::min(rows, m.n - r0);
    constexpr int64_t kPart = 8;  // rows per parallel task
#pragma omp parallel for if (nr * m.k > kParallelElems / 4)
    for (int64_t p = 0; p < nr; p += kPart) {
      const int64_t p1 = std::min(nr, p + kPart);
      if (m.intn != nullptr)
        kernels::intn_dequantize_tile(*m.intn, r0 + p, r0 + p1, tile.data() + p * m.k);
      else
        kernels::nf4_dequantize_tile(*m.nf4, r0 + p, r0 + p1, tile.data() + p * m.k);
    }
    sgemm(true, T, nr, m.k, 1.0f, x, m.k, tile.data(), m.k, 0.0f, y + r0, m.n);
  }
  if (m.bias != nullptr)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < m.n; ++j) y[t * m.n + j] += m.bias[j];
}

// Y[T×n] = X[T×k]·Wᵀ (+ bias): W [n×k] row-major, f32 or packed (ggml blocks, f16, bf16).
// int8: Q8_0/Q4_0/Q4_K/Q6_K weights take the integer-dot GEMM on int8-quantized rows of X.
void gemm(const Matrix& m, const float* x, float* y, int64_t T, bool int8) {
  if (m.packed_layer()) return gemm_packed_layer(m, x, y, T);
  if (int8 && kernels::act_q8_supports(m.type)) {
    kernels::gemm_quant(m.type, m.w, x, m.bias, y, T, m.n, m.k, 0, m.repacked);
    return;
  }
  if (m.type != DType::F32 && T <= kernels::kMaxGemvBatch && !m.repacked) {
    // A few rows: stream the packed weight once (bandwidth-bound, like decode).
    kernels::gemv_batch(m.type, m.w, x, m.bias, y, T, m.n, m.k);
    return;
  }
  if (m.type == DType::F32) {
    sgemm(true, T, m.n, m.k, 1.0f, x, m.k, static_cast<const float*>(m.w), m.k, 0.0f, y, m.n);
  } else {
    // Packed: dequantize a tile of rows, multiply it into the tile's output columns, move on; no
    // f32 copy of the weight is kept (the dequantization is amortized over the T rows of X).
    const int64_t rows = std::max<int64_t>(16, std::min<int64_t>(m.n, kTileFloats / m.k));
    // (Repacked rows are first unpacked, a few at a time, into ggml blocks.)
    const int64_t row_bytes = dtype_bytes_for(m.type, m.k);
    std::vector<float> tile(static_cast<size_t>(rows * m.k));
    const auto* w = static_cast<const uint8_t*>(m.w);
    for (int64_t r0 = 0; r0 < m.n; r0 += rows) {
      const int64_t nr = std::min(rows, m.n - r0);
#pragma omp parallel for if (nr * m.k > kParallelElems / 4)
      for (int64_t r = 0; r < nr; ++r) {
        if (m.repacked) {
          thread_local std::vector<uint8_t> row;
          row.resize(static_cast<size_t>(row_bytes));
          kernels::unpack_rows(m.type, m.w, m.k, r0 + r, r0 + r + 1, row.data());
          kernels::dequantize_row(m.type, row.data(), tile.data() + r * m.k, m.k);
        } else {
          kernels::dequantize_row(m.type, w + (r0 + r) * row_bytes, tile.data() + r * m.k, m.k);
        }
      }
      sgemm(true, T, nr, m.k, 1.0f, x, m.k, tile.data(), m.k, 0.0f, y + r0, m.n);
    }
  }
  if (m.bias != nullptr)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < m.n; ++j) y[t * m.n + j] += m.bias[j];
}

CpuLlama::Cache& native_cache(EngineCache& c) {
  auto* p = dynamic_cast<CpuLlama::Cache*>(&c);
  LLMOPT_ASSERT(p != nullptr, "a KV cache made by another engine was given to the native engine");
  return *p;
}

}  // namespace

int64_t CpuLlama::Cache::bytes() const {
  int64_t b = 0;
  for (const auto& t : k) b += static_cast<int64_t>(t.size() * sizeof(float));
  for (const auto& t : v) b += static_cast<int64_t>(t.size() * sizeof(float));
  return b;
}

void CpuLlama::Cache::truncate(int64_t n) {
  LLMOPT_CHECK_INPUT(n >= 0 && n <= filled, "[infer] cannot truncate a KV cache of {} positions to {}", filled, n);
  filled = n;
}

std::unique_ptr<EngineCache> CpuLlama::make_cache(int64_t capacity) const {
  LLMOPT_CHECK_INPUT(capacity > 0, "[infer] KV cache capacity must be positive, got {}", capacity);
  auto cache = std::make_unique<Cache>();
  cache->cap = capacity;
  const size_t n = static_cast<size_t>(w_.cfg.num_key_value_heads * capacity * w_.cfg.head_dim);
  cache->k.assign(static_cast<size_t>(w_.cfg.num_hidden_layers), std::vector<float>(n));
  cache->v.assign(static_cast<size_t>(w_.cfg.num_hidden_layers), std::vector<float>(n));
  return cache;
}

void CpuLlama::decode(int64_t token, EngineCache& ec, float* logits) const {
  Cache& cache = native_cache(ec);
  LLMOPT_CHECK_INPUT(cache.filled < cache.cap, "[infer] KV cache full ({} positions)", cache.cap);
  KvSlots kv;
  kv.capacity = cache.cap;
  for (auto& t : cache.k) kv.k.push_back(t.data());
  for (auto& t : cache.v) kv.v.push_back(t.data());
  decode_step(w_, kv, cache.filled, token, logits);
  cache.filled += 1;
}

void CpuLlama::prefill(const int64_t* tokens, int64_t T, EngineCache& ec, float* logits, bool all_positions) const {
  LLMOPT_CHECK_INPUT(T >= 1, "[infer] prefill needs at least one token");
  if (T == 1) return decode(tokens[0], ec, logits);  // one row: its logits are all positions'
  Cache& cache = native_cache(ec);
  const ModelConfig& c = w_.cfg;
  const int64_t D = c.hidden_size, H = c.num_attention_heads, KV = c.num_key_value_heads, hd = c.head_dim;
  const int64_t F = c.intermediate_size, V = c.vocab_size, G = H / KV, cap = cache.cap;
  const int64_t p0 = cache.filled, S = p0 + T;
  LLMOPT_CHECK_INPUT(S <= cap, "[infer] {} tokens do not fit the KV cache ({} of {} positions used)", T, p0, cap);
  for (int64_t t = 0; t < T; ++t)
    LLMOPT_CHECK_INPUT(tokens[t] >= 0 && tokens[t] < V, "[model] token id {} out of range for vocab size {}",
                       tokens[t], V);
  const bool par = T * F > kParallelElems;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));

  // RoPE tables for positions p0..S-1.
  std::vector<float> cos(static_cast<size_t>(T * hd)), sin(static_cast<size_t>(T * hd));
  for (int64_t t = 0; t < T; ++t) rope_angles(w_.inv_freq, p0 + t, hd, &cos[t * hd], &sin[t * hd]);

  std::vector<float> x(T * D), xn(T * D), tmp(T * D), q(T * H * hd), k(T * KV * hd), v(T * KV * hd),
      att(T * H * hd), g(T * F), u(T * F), scores(T * S);
  for (int64_t t = 0; t < T; ++t) std::copy_n(w_.embed + tokens[t] * D, D, x.data() + t * D);
  auto norm_rows = [&](const float* wn) {
#pragma omp parallel for if (par)
    for (int64_t t = 0; t < T; ++t) blocks::rms_norm_rows(x.data(), wn, xn.data(), t, t + 1, D, eps);
  };
  auto add_residual = [&] {
#pragma omp parallel for if (par)
    for (int64_t i = 0; i < T * D; ++i) x[i] += tmp[i];
  };

  for (size_t li = 0; li < w_.layers.size(); ++li) {
    const LayerWeights& L = w_.layers[li];
    norm_rows(L.ln1);
    gemm(L.m[LayerWeights::Q], xn.data(), q.data(), T, w_.int8_activations);
    gemm(L.m[LayerWeights::K], xn.data(), k.data(), T, w_.int8_activations);
    gemm(L.m[LayerWeights::V], xn.data(), v.data(), T, w_.int8_activations);
    const blocks::LayerCache lc{cache.k[li].data(), cache.v[li].data(), cap, hd};
    for (int64_t t = 0; t < T; ++t) {
      const float* ct = &cos[t * hd];
      const float* st = &sin[t * hd];
      blocks::rope_heads(q.data() + t * H * hd, 0, H, ct, st, hd);
      float* kt = k.data() + t * KV * hd;
      blocks::rope_heads(kt, 0, KV, ct, st, hd);
      for (int64_t h = 0; h < KV; ++h) blocks::store_kv(lc, h, p0 + t, kt, v.data() + t * KV * hd);
    }
    // Per query head: scores = scale · Q_h K_hᵀ [T×S], causal softmax by row, att_h = P V_h.
    for (int64_t h = 0; h < H; ++h) {
      sgemm(true, T, S, hd, scale, q.data() + h * hd, H * hd, lc.keys(h / G), hd, 0.0f, scores.data(), S);
#pragma omp parallel for if (par)
      for (int64_t t = 0; t < T; ++t)
        blocks::causal_softmax(scores.data() + t * S, blocks::first_key(p0 + t, c.sliding_window), p0 + t + 1, S);
      sgemm(false, T, hd, S, 1.0f, scores.data(), S, lc.values(h / G), hd, 0.0f, att.data() + h * hd, H * hd);
    }
    gemm(L.m[LayerWeights::O], att.data(), tmp.data(), T, w_.int8_activations);
    add_residual();
    norm_rows(L.ln2);
    gemm(L.m[LayerWeights::Gate], xn.data(), g.data(), T, w_.int8_activations);
    gemm(L.m[LayerWeights::Up], xn.data(), u.data(), T, w_.int8_activations);
#pragma omp parallel for if (par)
    for (int64_t t = 0; t < T; ++t) kernels::silu_mul_f32(g.data() + t * F, u.data() + t * F, F);
    gemm(L.m[LayerWeights::Down], g.data(), tmp.data(), T, w_.int8_activations);
    add_residual();
  }
  if (all_positions) {
    // Every position's logits (perplexity): the final norm of all rows and one GEMM [T×D]·headᵀ.
    norm_rows(w_.final_norm);
    gemm(w_.head, xn.data(), logits, T, w_.int8_activations);
  } else {
    // Only the last position's: what a generator (and llama-bench) needs.
    blocks::rms_norm_rows(x.data() + (T - 1) * D, w_.final_norm, xn.data(), 0, 1, D, eps);
    const Matrix& h = w_.head;
    if (h.packed_layer()) {
      constexpr int64_t kChunk = 256;
#pragma omp parallel for schedule(static)
      for (int64_t r0 = 0; r0 < V; r0 += kChunk) gemv_rows_f32(h, xn.data(), logits, r0, std::min(V, r0 + kChunk));
    } else if (w_.int8_activations && h.repacked) {
      kernels::gemv_repacked(h.type, h.w, xn.data(), h.bias, logits, V, D);
    } else if (w_.int8_activations && kernels::act_q8_supports(h.type)) {
      kernels::gemv_act_q8(h.type, h.w, xn.data(), h.bias, logits, V, D);
    } else if (h.repacked) {
      constexpr int64_t kChunk = 256;
#pragma omp parallel for schedule(static)
      for (int64_t r0 = 0; r0 < V; r0 += kChunk) gemv_rows_f32(h, xn.data(), logits, r0, std::min(V, r0 + kChunk));
    } else {
      kernels::gemv(h.type, h.w, xn.data(), h.bias, logits, V, D);
    }
  }
  cache.filled = S;
}

}  // namespace llmopt::infer
