#include "infer/llama_cpu.h"

#include <malloc.h>
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <unordered_map>

#include "core/error.h"
#include "infer/blas.h"
#include "io/checkpoint_tensors.h"
#include "kernels/gemv.h"
#include "kernels/vec_math.h"

namespace llmopt::infer {
namespace {

constexpr size_t kHuge = size_t{2} << 20;
constexpr int64_t kAlignFloats = 16;  // 64-byte alignment of every tensor in the arena

// Element-wise work of a prefill this small runs on the calling thread: waking OpenMP workers
// between OpenBLAS calls costs more than it saves and their spinning steals OpenBLAS's cores
// (the same threshold as the torch engine's, model/llama.cpp).
constexpr int64_t kParallelElems = int64_t{1} << 20;

// Y[T×n] = X[T×k]·Wᵀ (+ bias): W [n×k] row-major f32.
void gemm(const Matrix& m, const float* x, float* y, int64_t T) {
  sgemm(true, T, m.n, m.k, 1.0f, x, m.k, static_cast<const float*>(m.w), m.k, 0.0f, y, m.n);
  if (m.bias != nullptr)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < m.n; ++j) y[t * m.n + j] += m.bias[j];
}

}  // namespace

void* hugepage_alloc(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, kHuge, std::max<size_t>(bytes, 1)) != 0) return nullptr;
  if (bytes >= kHuge) madvise(p, bytes / kHuge * kHuge, MADV_HUGEPAGE);
  return p;
}

CpuLlama::CpuLlama(const io::Checkpoint& ckpt) : arena_(nullptr, std::free) {
  io::validate_checkpoint_tensors(ckpt, "infer");
  const ModelConfig& c = ckpt.config;
  w_.cfg = c;
  // Arena layout: every expected tensor at a 64-byte aligned offset, in the order listed.
  std::unordered_map<std::string, int64_t> offset;  // tensor name -> float offset in the arena
  int64_t total = 0;
  io::for_each_expected_tensor(c, [&](const io::ExpectedTensor& e) {
    const int64_t n = ckpt.get(e.name).numel();
    offset[e.name] = total;
    weight_bytes_ += n * 4;
    total += (n + kAlignFloats - 1) / kAlignFloats * kAlignFloats;
  });
  arena_.reset(static_cast<float*>(hugepage_alloc(static_cast<size_t>(total) * sizeof(float))));
  if (!arena_) throw std::bad_alloc();
  float* base = arena_.get();
  for (const auto& [name, off] : offset) io::tensor_to_f32_into(ckpt.get(name), base + off);
  auto at = [&](const std::string& name) -> const float* {
    const auto it = offset.find(name);
    return it == offset.end() ? nullptr : base + it->second;
  };

  w_.embed = at("model.embed_tokens.weight");
  w_.final_norm = at("model.norm.weight");
  inv_freq_ = rope_inv_freq(c);
  w_.inv_freq = inv_freq_.data();
  auto mat = [&](const std::string& prefix, int64_t n, int64_t k, bool bias) {
    Matrix m;
    m.w = at(prefix + ".weight");
    m.bias = bias ? at(prefix + ".bias") : nullptr;
    m.n = n, m.k = k;
    return m;
  };
  const int64_t D = c.hidden_size, qd = c.num_attention_heads * c.head_dim, kvd = c.kv_dim();
  const int64_t F = c.intermediate_size;
  w_.layers.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    LayerWeights& L = w_.layers[static_cast<size_t>(i)];
    L.m[LayerWeights::Q] = mat(p + ".self_attn.q_proj", qd, D, c.attention_bias);
    L.m[LayerWeights::K] = mat(p + ".self_attn.k_proj", kvd, D, c.attention_bias);
    L.m[LayerWeights::V] = mat(p + ".self_attn.v_proj", kvd, D, c.attention_bias);
    L.m[LayerWeights::O] = mat(p + ".self_attn.o_proj", D, qd, false);
    L.m[LayerWeights::Gate] = mat(p + ".mlp.gate_proj", F, D, false);
    L.m[LayerWeights::Up] = mat(p + ".mlp.up_proj", F, D, false);
    L.m[LayerWeights::Down] = mat(p + ".mlp.down_proj", D, F, false);
    L.ln1 = at(p + ".input_layernorm.weight");
    L.ln2 = at(p + ".post_attention_layernorm.weight");
  }
  if (c.tie_word_embeddings) {
    w_.head.w = w_.embed, w_.head.n = c.vocab_size, w_.head.k = D;
  } else {
    w_.head = mat("lm_head", c.vocab_size, D, false);
  }
}

CpuLlama::~CpuLlama() = default;

int64_t CpuLlama::Cache::bytes() const {
  int64_t b = 0;
  for (const auto& t : k) b += static_cast<int64_t>(t.size() * sizeof(float));
  for (const auto& t : v) b += static_cast<int64_t>(t.size() * sizeof(float));
  return b;
}

CpuLlama::Cache CpuLlama::make_cache(int64_t capacity) const {
  LLMOPT_CHECK_INPUT(capacity > 0, "[infer] KV cache capacity must be positive, got {}", capacity);
  Cache cache;
  cache.capacity = capacity;
  const size_t n = static_cast<size_t>(w_.cfg.num_key_value_heads * capacity * w_.cfg.head_dim);
  cache.k.assign(static_cast<size_t>(w_.cfg.num_hidden_layers), std::vector<float>(n));
  cache.v.assign(static_cast<size_t>(w_.cfg.num_hidden_layers), std::vector<float>(n));
  return cache;
}

void CpuLlama::decode(int64_t token, Cache& cache, float* logits) const {
  LLMOPT_CHECK_INPUT(cache.length < cache.capacity, "[infer] KV cache full ({} positions)", cache.capacity);
  KvSlots kv;
  kv.capacity = cache.capacity;
  for (auto& t : cache.k) kv.k.push_back(t.data());
  for (auto& t : cache.v) kv.v.push_back(t.data());
  decode_step(w_, kv, cache.length, token, logits);
  cache.length += 1;
}

void CpuLlama::prefill(const int64_t* tokens, int64_t T, Cache& cache, float* logits) const {
  LLMOPT_CHECK_INPUT(T >= 1, "[infer] prefill needs at least one token");
  if (T == 1) return decode(tokens[0], cache, logits);
  const ModelConfig& c = w_.cfg;
  const int64_t D = c.hidden_size, H = c.num_attention_heads, KV = c.num_key_value_heads, hd = c.head_dim;
  const int64_t F = c.intermediate_size, V = c.vocab_size, G = H / KV, cap = cache.capacity;
  const int64_t p0 = cache.length, S = p0 + T;
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
    for (int64_t t = 0; t < T; ++t) kernels::rms_norm_f32(x.data() + t * D, wn, xn.data() + t * D, D, eps);
  };
  auto add_residual = [&] {
#pragma omp parallel for if (par)
    for (int64_t i = 0; i < T * D; ++i) x[i] += tmp[i];
  };

  for (size_t li = 0; li < w_.layers.size(); ++li) {
    const LayerWeights& L = w_.layers[li];
    norm_rows(L.ln1);
    gemm(L.m[LayerWeights::Q], xn.data(), q.data(), T);
    gemm(L.m[LayerWeights::K], xn.data(), k.data(), T);
    gemm(L.m[LayerWeights::V], xn.data(), v.data(), T);
    float* Kc = cache.k[li].data();
    float* Vc = cache.v[li].data();
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < H; ++h) rope_rotate_half(q.data() + (t * H + h) * hd, &cos[t * hd], &sin[t * hd], hd);
      for (int64_t h = 0; h < KV; ++h) {
        float* kr = k.data() + (t * KV + h) * hd;
        rope_rotate_half(kr, &cos[t * hd], &sin[t * hd], hd);
        std::copy_n(kr, hd, Kc + (h * cap + p0 + t) * hd);
        std::copy_n(v.data() + (t * KV + h) * hd, hd, Vc + (h * cap + p0 + t) * hd);
      }
    }
    // Per query head: scores = scale · Q_h K_hᵀ [T×S], causal softmax by row, att_h = P V_h.
    for (int64_t h = 0; h < H; ++h) {
      const float* Kh = Kc + (h / G) * cap * hd;
      const float* Vh = Vc + (h / G) * cap * hd;
      sgemm(true, T, S, hd, scale, q.data() + h * hd, H * hd, Kh, hd, 0.0f, scores.data(), S);
#pragma omp parallel for if (par)
      for (int64_t t = 0; t < T; ++t) {
        float* row = scores.data() + t * S;
        const int64_t n = p0 + t + 1;  // keys 0..p0+t
        kernels::softmax_f32(row, n);
        std::fill(row + n, row + S, 0.0f);
      }
      sgemm(false, T, hd, S, 1.0f, scores.data(), S, Vh, hd, 0.0f, att.data() + h * hd, H * hd);
    }
    gemm(L.m[LayerWeights::O], att.data(), tmp.data(), T);
    add_residual();
    norm_rows(L.ln2);
    gemm(L.m[LayerWeights::Gate], xn.data(), g.data(), T);
    gemm(L.m[LayerWeights::Up], xn.data(), u.data(), T);
#pragma omp parallel for if (par)
    for (int64_t t = 0; t < T; ++t) kernels::silu_mul_f32(g.data() + t * F, u.data() + t * F, F);
    gemm(L.m[LayerWeights::Down], g.data(), tmp.data(), T);
    add_residual();
  }
  // Only the last position's logits: what a generator (and llama-bench) needs.
  kernels::rms_norm_f32(x.data() + (T - 1) * D, w_.final_norm, xn.data(), D, eps);
  kernels::gemv(w_.head.type, w_.head.w, xn.data(), w_.head.bias, logits, V, D);
  cache.length = S;
}

}  // namespace llmopt::infer

namespace llmopt::infer {

LoadedCpuModel load_cpu_model(const std::string& path, const std::string& tokenizer_path) {
  io::LoadOptions lo;
  lo.tokenizer_path = tokenizer_path;
  LoadedCpuModel out;
  {
    const io::Checkpoint ckpt = io::load_checkpoint(path, lo);
    out.model = std::make_unique<CpuLlama>(ckpt);
    if (ckpt.tokenizer.kind != io::TokenizerSource::Kind::None)
      out.tokenizer = tok::load_tokenizer(ckpt.tokenizer, static_cast<int32_t>(ckpt.config.vocab_size));
  }  // the checkpoint's file mappings are released here
  malloc_trim(0);  // and conversion temporaries handed back
  return out;
}

}  // namespace llmopt::infer
