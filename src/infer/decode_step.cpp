// Fused single-token decode step on the CPU. A decode step is bandwidth-bound (every weight is
// streamed once per token) and its other work is tiny, so a generic path's ~25 tensor ops and 7
// separate OpenMP regions per layer cost as much as the weights themselves on 2 cores. Here the
// whole token runs in one OpenMP region: each projection's rows are split into contiguous static
// slabs (one sequential stream per core; handing all rows out dynamically measured 10% slower)
// followed by a small dynamically shared tail (for_rows), every row computed by one thread with
// the kernels::gemv row kernel (so every output is bit-identical for any thread count),
// attention is split by key/value head, and the threads meet at barriers instead of forking and
// joining. The barriers are core/spin_barrier.h's (spin up to 20 µs, then sleep), not OpenMP's:
// with libgomp's longer spin a 2-thread decode collapsed 5-50x whenever another process took one
// of the two cores (bench/RESULTS.md, 2026-11-30 13:30). Attention dots, softmax, SwiGLU and RMSNorm
// use the SIMD primitives of kernels/vec_math.h. RMSNorm, RoPE and the cache write are the blocks
// of infer/blocks.h that CpuLlama's prefill uses too; the query's attention is blocks::attend_one.
// tests/model/llama_test.cpp checks it against a float64 reference and across thread counts.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/spin_barrier.h"
#include "core/threads.h"
#include "infer/blocks.h"
#include "infer/weights.h"
#include "kernels/gemm_quant.h"
#include "kernels/gemv.h"
#include "kernels/gemv_intn.h"
#include "kernels/repack.h"
#include "kernels/vec_math.h"

namespace llmopt::infer {
namespace {

// Fraction of each projection's rows handed out at run time (see for_rows). On the 134M
// benchmark (2 threads) the time spent spinning at barriers goes from 11% (all rows in static
// slabs) to 5% (0.1) and 3% (0.25); fully dynamic rows measured 10% slower (bench/RESULTS.md).
constexpr double kTailFraction = 0.1;

// Rows [0, n) of one projection, in 16-row blocks: thread t of nt first runs its contiguous
// static slab of the first (1 - kTailFraction) of the blocks (one sequential stream per core),
// then takes the remaining blocks one at a time from the shared counter `next`, so that a thread slowed
// down (by the other tenants of the memory bus) does not leave the others spinning at the next
// barrier. fn(r0, r1) is called for each range; every row is computed by exactly one thread.
template <class Fn>
void for_rows(int64_t n, int t, int nt, std::atomic<int64_t>& next, Fn&& fn) {
  const int64_t blocks = (n + 15) / 16;
  const int64_t fixed = static_cast<int64_t>(static_cast<double>(blocks) * (1.0 - kTailFraction)) / nt * nt;
  const int64_t r0 = std::min(n, fixed * t / nt * 16), r1 = std::min(n, fixed * (t + 1) / nt * 16);
  if (r0 < r1) fn(r0, r1);
  for (;;) {
    const int64_t b = fixed + next.fetch_add(1, std::memory_order_relaxed);
    if (b >= blocks) break;
    fn(b * 16, std::min(n, (b + 1) * 16));
  }
}

// xq: x quantized to int8 blocks (kernels::quantize_act), or null: f32 activations. for_rows
// hands out ranges that start at multiples of 16, so a repacked matrix's 8-row groups are never split.
void gemv_range(const Matrix& m, const float* x, const kernels::ActRow* xq, float* y, int64_t r0, int64_t r1) {
  if (xq != nullptr && m.repacked)
    kernels::gemv_repacked_rows(m.type, m.w, *xq, m.bias, y, r0, r1);
  else if (xq != nullptr && kernels::act_q8_supports(m.type))
    kernels::gemv_act_q8_rows(m.type, m.w, *xq, m.bias, y, r0, r1);
  else
    gemv_rows_f32(m, x, y, r0, r1);
}

// Whether any projection (or the head) takes int8 activations.
bool any_int8(const Weights& w) {
  if (!w.int8_activations) return false;
  if (kernels::act_q8_supports(w.head.type)) return true;
  for (const auto& l : w.layers)
    for (const auto& m : l.m)
      if (kernels::act_q8_supports(m.type)) return true;
  return false;
}

}  // namespace

void gemv_rows_f32(const Matrix& m, const float* x, float* y, int64_t r0, int64_t r1) {
  if (m.intn != nullptr) return kernels::intn_gemv_rows(*m.intn, x, m.bias, y, r0, r1);
  if (m.nf4 != nullptr) return kernels::nf4_gemv_rows(*m.nf4, x, m.bias, y, r0, r1);
  if (!m.repacked) return kernels::gemv_rows(m.type, m.w, x, m.bias, y, r0, r1, m.k);
  constexpr int64_t kChunk = 64;
  const int64_t rb = dtype_bytes_for(m.type, m.k);
  thread_local std::vector<uint8_t> rows;
  rows.resize(static_cast<size_t>(std::min(kChunk, r1 - r0) * rb));
  for (int64_t c0 = r0; c0 < r1; c0 += kChunk) {
    const int64_t c1 = std::min(r1, c0 + kChunk);
    kernels::unpack_rows(m.type, m.w, m.k, c0, c1, rows.data());
    kernels::gemv_rows(m.type, rows.data(), x, m.bias ? m.bias + c0 : nullptr, y + c0, 0, c1 - c0, m.k);
  }
}

std::vector<float> rope_inv_freq(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<float> inv(half);
  for (int64_t i = 0; i < half; ++i) {
    double f = 1.0 / std::pow(c.rope_theta, static_cast<double>(2 * i) / static_cast<double>(c.head_dim));
    if (c.rope_scaling.type == "llama3") {
      const auto& s = c.rope_scaling;
      const double old_ctx = static_cast<double>(s.original_max_position_embeddings);
      const double low_wavelen = old_ctx / s.low_freq_factor;
      const double high_wavelen = old_ctx / s.high_freq_factor;
      const double wavelen = 2 * M_PI / f;
      if (wavelen > low_wavelen) {
        f = f / s.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1 - smooth) * f / s.factor + smooth * f;
      }
    }
    inv[i] = static_cast<float>(f);
  }
  return inv;
}

void decode_step(const Weights& w, const KvSlots& kv, int64_t pos, int64_t token, float* out) {
  const ModelConfig& c = w.cfg;
  const int64_t nl = static_cast<int64_t>(w.layers.size());
  const int64_t D = c.hidden_size, H = c.num_attention_heads, KV = c.num_key_value_heads;
  const int64_t hd = c.head_dim, F = c.intermediate_size, V = c.vocab_size, G = H / KV;
  LLMOPT_CHECK_INPUT(token >= 0 && token < V, "[model] token id {} out of range for vocab size {}", token, V);
  LLMOPT_ASSERT(pos >= 0 && pos < kv.capacity, "KV cache full: position {} of capacity {}", pos, kv.capacity);
  const int64_t S = pos + 1, cap = kv.capacity;
  const int64_t lo = blocks::first_key(pos, c.sliding_window);  // keys lo..pos are visible

  std::vector<float> cos(hd), sin(hd);
  rope_angles(w.inv_freq, pos, hd, cos.data(), sin.data());
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  const float eps = static_cast<float>(c.rms_norm_eps);

  std::vector<float> x(D), tmp(D), q(H * hd), k(KV * hd), v(KV * hd), att(H * hd), hb(F), hb2(F);
  std::vector<float> scores(H * S);
  std::copy_n(w.embed + token * D, D, x.data());

  // Per layer, 5 barriers: after q/k/v, after attention, after the attention output projection
  // (+ residual), after gate/up (+ SwiGLU), after the down projection (+ residual). Every thread
  // computes the RMSNorm of the
  // complete x into its own buffer instead of waiting for one thread to do it. One row counter
  // per projection phase (for_rows): q, k, v, o, gate+up, down per layer, and the head.
  enum { kQ, kK, kV, kO, kGateUp, kDown, kPhases };
  std::vector<std::atomic<int64_t>> next(static_cast<size_t>(nl * kPhases + 1));
  const bool int8 = any_int8(w);
  SpinBarrier barrier;
#pragma omp parallel num_threads(threads())
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    std::vector<float> xn(D);  // this thread's copy of the normalized x
    // This thread's int8 copy of the current projection input (each thread quantizes the whole
    // input itself: a few µs, no barrier), or null when no projection uses it.
    kernels::ActRow xq_buf;
    auto quantized = [&](const float* in, int64_t n) -> const kernels::ActRow* {
      if (!int8 || n % kernels::kActBlock != 0) return nullptr;
      xq_buf.quantize(in, n);
      return &xq_buf;
    };
    // x += m·in (attention output and down projections): each thread adds the rows it computed.
    auto add_projection = [&](const Matrix& m, const float* in, std::atomic<int64_t>& ctr) {
      const kernels::ActRow* inq = quantized(in, m.k);
      for_rows(D, t, nt, ctr, [&](int64_t r0, int64_t r1) {
        gemv_range(m, in, inq, tmp.data(), r0, r1);
        for (int64_t r = r0; r < r1; ++r) x[r] = x[r] + tmp[r];
      });
    };
    for (int64_t li = 0; li < nl; ++li) {
      const LayerWeights& lw = w.layers[li];
      std::atomic<int64_t>* ctr = next.data() + li * kPhases;
      blocks::rms_norm_rows(x.data(), lw.ln1, xn.data(), 0, 1, D, eps);
      const kernels::ActRow* xnq = quantized(xn.data(), D);
      for (int j : {LayerWeights::Q, LayerWeights::K, LayerWeights::V}) {
        float* y = j == LayerWeights::Q ? q.data() : j == LayerWeights::K ? k.data() : v.data();
        for_rows(lw.m[j].n, t, nt, ctr[kQ + j],
                 [&](int64_t r0, int64_t r1) { gemv_range(lw.m[j], xn.data(), xnq, y, r0, r1); });
      }
      barrier.wait(nt);
      // Attention by key/value head: RoPE on k, the cache row, then the G query heads sharing it.
      const blocks::LayerCache lc{kv.k[li], kv.v[li], cap, hd};
      for (int64_t kh = t; kh < KV; kh += nt) {
        blocks::rope_heads(k.data(), kh, kh + 1, cos.data(), sin.data(), hd);
        blocks::store_kv(lc, kh, pos, k.data(), v.data());
        for (int64_t h = kh * G; h < (kh + 1) * G; ++h) {
          blocks::rope_heads(q.data(), h, h + 1, cos.data(), sin.data(), hd);
          blocks::attend_one(q.data() + h * hd, lc.key(kh, lo), lc.value(kh, lo), S - lo, hd, scale,
                             scores.data() + h * S, att.data() + h * hd);
        }
      }
      barrier.wait(nt);
      add_projection(lw.m[LayerWeights::O], att.data(), ctr[kO]);
      barrier.wait(nt);
      blocks::rms_norm_rows(x.data(), lw.ln2, xn.data(), 0, 1, D, eps);
      const kernels::ActRow* xnq2 = quantized(xn.data(), D);
      for_rows(F, t, nt, ctr[kGateUp], [&](int64_t r0, int64_t r1) {
        gemv_range(lw.m[LayerWeights::Gate], xn.data(), xnq2, hb.data(), r0, r1);
        gemv_range(lw.m[LayerWeights::Up], xn.data(), xnq2, hb2.data(), r0, r1);
        kernels::silu_mul_f32(hb.data() + r0, hb2.data() + r0, r1 - r0);
      });
      barrier.wait(nt);
      add_projection(lw.m[LayerWeights::Down], hb.data(), ctr[kDown]);
      barrier.wait(nt);
    }
    blocks::rms_norm_rows(x.data(), w.final_norm, xn.data(), 0, 1, D, eps);
    const kernels::ActRow* xnq = quantized(xn.data(), D);
    for_rows(V, t, nt, next[nl * kPhases],
             [&](int64_t r0, int64_t r1) { gemv_range(w.head, xn.data(), xnq, out, r0, r1); });
  }
}

}  // namespace llmopt::infer
