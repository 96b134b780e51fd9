// Fused single-token decode step on the CPU. A decode step is bandwidth-bound (every weight is
// streamed once per token) and its other work is tiny, so the generic path's ~25 torch ops and
// 7 separate OpenMP regions per layer cost as much as the weights themselves on 2 cores. Here the
// whole token runs in one OpenMP region: each projection is split into the same contiguous row
// slabs as kernels::gemv (so every output is bit-identical for any thread count; handing rows
// out dynamically instead measured 10% slower: the slabs keep each core on one sequential
// stream), attention is split by key/value head, and the threads meet at barriers (which spin,
// GOMP_SPINCOUNT) instead of forking and joining. The math is the generic forward's;
// tests/model/llama_test.cpp checks it against a float64 reference and across thread counts.
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/threads.h"
#include "kernels/gemv.h"
#include "model/llama_layers.h"

namespace llmopt::model {
namespace {

// One projection as a GEMV operand.
struct Mat {
  const void* w = nullptr;
  DType type = DType::F32;
  const float* bias = nullptr;
  int64_t n = 0, k = 0;
};

bool cpu_f32(const torch::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous();
}

bool as_mat(const LinearLayer* l, Mat& m) {
  if (l == nullptr) return false;
  m.w = l->gemv_weights(&m.type);
  if (m.w == nullptr) return false;
  const auto b = l->bias();
  if (b.defined()) {
    if (!cpu_f32(b)) return false;
    m.bias = b.data_ptr<float>();
  }
  m.n = l->out_features();
  m.k = l->in_features();
  return true;
}

// Rows [r0, r1) of an n-row matrix owned by thread t of nt: contiguous slabs of 16-row blocks.
void slab(int64_t n, int t, int nt, int64_t& r0, int64_t& r1) {
  const int64_t blocks = (n + 15) / 16;
  r0 = std::min(n, blocks * t / nt * 16);
  r1 = std::min(n, blocks * (t + 1) / nt * 16);
}

void gemv_slab(const Mat& m, const float* x, float* y, int t, int nt) {
  int64_t r0, r1;
  slab(m.n, t, nt, r0, r1);
  kernels::gemv_rows(m.type, m.w, x, m.bias, y, r0, r1, m.k);
}

// HF LlamaRMSNorm: x * rsqrt(mean(x²) + eps) * w (mean accumulated in double here).
void rms_norm(const float* x, const float* w, float* out, int64_t d, double eps) {
  double ss = 0;
  for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(d)) + static_cast<float>(eps));
  for (int64_t i = 0; i < d; ++i) out[i] = x[i] * inv * w[i];
}

// HF rotate-half RoPE on one head: v*cos + rotate_half(v)*sin, cos/sin of the halves duplicated.
void rope(float* v, const float* cos, const float* sin, int64_t hd) {
  const int64_t h = hd / 2;
  for (int64_t i = 0; i < h; ++i) {
    const float a = v[i], b = v[i + h];
    v[i] = a * cos[i] + (-b) * sin[i];
    v[i + h] = b * cos[i] + a * sin[i];
  }
}

struct LayerMats {
  std::array<Mat, 7> m;  // q k v o gate up down
  const float* ln1 = nullptr;
  const float* ln2 = nullptr;
};

}  // namespace

torch::Tensor LlamaModel::try_decode_fused(int64_t token, KVCache& cache) {
  // Applicable when the cache, norms and every projection are plain CPU float32 GEMV operands;
  // the layer list is built in the same pass (undefined result: take the generic path).
  const int64_t nl = static_cast<int64_t>(layers_.size());
  if (static_cast<int64_t>(cache.k.size()) != nl || static_cast<int64_t>(cache.v.size()) != nl ||
      cache.length >= cache.capacity)
    return {};
  if (!cpu_f32(embed_tokens_) || !cpu_f32(norm_) || !cpu_f32(rope_inv_freq_)) return {};
  std::vector<LayerMats> mats(nl);
  for (int64_t i = 0; i < nl; ++i) {
    if (!cpu_f32(cache.k[i]) || !cpu_f32(cache.v[i]) || cache.k[i].size(0) != 1) return {};
    const auto& L = *layers_[i];
    if (!cpu_f32(L.input_layernorm->weight) || !cpu_f32(L.post_attention_layernorm->weight)) return {};
    const LinearLayer* ls[7] = {L.self_attn->q_proj.get(), L.self_attn->k_proj.get(), L.self_attn->v_proj.get(),
                                L.self_attn->o_proj.get(), L.mlp->gate_proj.get(),     L.mlp->up_proj.get(),
                                L.mlp->down_proj.get()};
    for (int j = 0; j < 7; ++j)
      if (!as_mat(ls[j], mats[i].m[j])) return {};
    mats[i].ln1 = L.input_layernorm->weight.data_ptr<float>();
    mats[i].ln2 = L.post_attention_layernorm->weight.data_ptr<float>();
  }
  const int64_t D = cfg_.hidden_size, H = cfg_.num_attention_heads, KV = cfg_.num_key_value_heads;
  const int64_t hd = cfg_.head_dim, F = cfg_.intermediate_size, V = cfg_.vocab_size, G = H / KV;
  Mat head;
  if (lm_head_) {
    if (!as_mat(lm_head_.get(), head)) return {};
  } else {
    head.w = embed_tokens_.data_ptr<float>(), head.n = V, head.k = D;
  }
  LLMOPT_CHECK_INPUT(token >= 0 && token < V, "[model] token id {} out of range for vocab size {}", token, V);
  const int64_t pos = cache.length, S = pos + 1, cap = cache.capacity;

  // RoPE angles for this position, as the generic path computes them (float products).
  const int64_t half = hd / 2;
  std::vector<float> cos(hd), sin(hd);
  const float* inv = rope_inv_freq_.data_ptr<float>();
  for (int64_t i = 0; i < half; ++i) {
    const float a = static_cast<float>(pos) * inv[i];
    cos[i] = cos[i + half] = std::cos(a);
    sin[i] = sin[i + half] = std::sin(a);
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));

  std::vector<float> x(D), tmp(D), q(H * hd), k(KV * hd), v(KV * hd), att(H * hd), hb(F), hb2(F);
  std::vector<float> scores(H * S);
  auto logits = torch::empty({1, 1, V}, torch::kFloat32);
  float* out = logits.data_ptr<float>();
  std::copy_n(embed_tokens_.data_ptr<float>() + token * D, D, x.data());
  std::vector<float*> kc(nl), vc(nl);
  for (int64_t i = 0; i < nl; ++i) kc[i] = cache.k[i].data_ptr<float>(), vc[i] = cache.v[i].data_ptr<float>();
  const double eps = cfg_.rms_norm_eps;
  const float* final_norm = norm_.data_ptr<float>();

  // Per layer, 5 barriers: after q/k/v, after attention, after o_proj (+ residual), after
  // gate/up (+ SwiGLU), after down_proj (+ residual). Every thread computes the RMSNorm of the
  // complete x into its own buffer instead of waiting for one thread to do it.
#pragma omp parallel num_threads(threads())
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    std::vector<float> xn(D);  // this thread's copy of the normalized x
    auto add_rows = [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) x[r] = x[r] + tmp[r];
    };
    for (int64_t li = 0; li < nl; ++li) {
      const LayerMats& lm = mats[li];
      rms_norm(x.data(), lm.ln1, xn.data(), D, eps);
      gemv_slab(lm.m[0], xn.data(), q.data(), t, nt);
      gemv_slab(lm.m[1], xn.data(), k.data(), t, nt);
      gemv_slab(lm.m[2], xn.data(), v.data(), t, nt);
#pragma omp barrier
      // Attention by key/value head: RoPE on k, the cache row, then the G query heads sharing it.
      for (int64_t kh = t; kh < KV; kh += nt) {
        rope(k.data() + kh * hd, cos.data(), sin.data(), hd);
        float* K = kc[li] + kh * cap * hd;
        float* Vh = vc[li] + kh * cap * hd;
        std::copy_n(k.data() + kh * hd, hd, K + pos * hd);
        std::copy_n(v.data() + kh * hd, hd, Vh + pos * hd);
        for (int64_t h = kh * G; h < (kh + 1) * G; ++h) {
          float* qh = q.data() + h * hd;
          rope(qh, cos.data(), sin.data(), hd);
          float* s = scores.data() + h * S;
          float mx = -INFINITY;
          for (int64_t j = 0; j < S; ++j) {
            float dot = 0;
            for (int64_t d = 0; d < hd; ++d) dot += qh[d] * K[j * hd + d];
            s[j] = dot * scale;
            mx = std::max(mx, s[j]);
          }
          float sum = 0;
          for (int64_t j = 0; j < S; ++j) sum += (s[j] = std::exp(s[j] - mx));
          float* a = att.data() + h * hd;
          std::fill_n(a, hd, 0.0f);
          for (int64_t j = 0; j < S; ++j) {
            const float p = s[j] / sum;
            for (int64_t d = 0; d < hd; ++d) a[d] += p * Vh[j * hd + d];
          }
        }
      }
#pragma omp barrier
      int64_t r0, r1;
      gemv_slab(lm.m[3], att.data(), tmp.data(), t, nt);
      slab(D, t, nt, r0, r1);
      add_rows(r0, r1);
#pragma omp barrier
      rms_norm(x.data(), lm.ln2, xn.data(), D, eps);
      gemv_slab(lm.m[4], xn.data(), hb.data(), t, nt);
      gemv_slab(lm.m[5], xn.data(), hb2.data(), t, nt);
      slab(F, t, nt, r0, r1);  // gate and up share the row slabs: SwiGLU on this thread's rows
      for (int64_t r = r0; r < r1; ++r) hb[r] = hb[r] / (1.0f + std::exp(-hb[r])) * hb2[r];
#pragma omp barrier
      gemv_slab(lm.m[6], hb.data(), tmp.data(), t, nt);
      slab(D, t, nt, r0, r1);
      add_rows(r0, r1);
#pragma omp barrier
    }
    rms_norm(x.data(), final_norm, xn.data(), D, eps);
    gemv_slab(head, xn.data(), out, t, nt);
  }
  cache.length = S;
  return logits;
}

}  // namespace llmopt::model
