// The torch engine's fused single-token CPU step: when the cache, norms and every projection are
// plain CPU float32 GEMV operands, LlamaModel hands raw views of them to infer::decode_step (the
// step CpuLlama runs too; see src/infer/decode_step.cpp for how it is organized).
#include "model/decode_cpu.h"

#include <atomic>

#include "infer/weights.h"
#include "model/llama_layers.h"

namespace llmopt::model {
namespace {

std::atomic<int64_t> g_fused_steps{0};

bool cpu_f32(const torch::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous();
}

bool as_mat(const LinearLayer* l, infer::Matrix& m) {
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

}  // namespace

int64_t fused_decode_steps() { return g_fused_steps.load(std::memory_order_relaxed); }

torch::Tensor LlamaModel::try_decode_fused(int64_t token, KVCache& cache) {
  // Applicable when the cache, norms and every projection are plain CPU float32 GEMV operands;
  // the views are gathered in the same pass (undefined result: take the generic path).
  const int64_t nl = static_cast<int64_t>(layers_.size());
  if (static_cast<int64_t>(cache.k.size()) != nl || static_cast<int64_t>(cache.v.size()) != nl ||
      cache.length >= cache.capacity)
    return {};
  if (!cpu_f32(embed_tokens_) || !cpu_f32(norm_) || !cpu_f32(rope_inv_freq_)) return {};
  infer::Weights w;
  w.cfg = cfg_;
  w.layers.resize(static_cast<size_t>(nl));
  infer::KvSlots kv;
  kv.capacity = cache.capacity;
  for (int64_t i = 0; i < nl; ++i) {
    if (!cpu_f32(cache.k[i]) || !cpu_f32(cache.v[i]) || cache.k[i].size(0) != 1) return {};
    kv.k.push_back(cache.k[i].data_ptr<float>());
    kv.v.push_back(cache.v[i].data_ptr<float>());
    const auto& L = *layers_[i];
    if (!cpu_f32(L.attn_norm) || !cpu_f32(L.ffn_norm)) return {};
    for (size_t j = 0; j < L.proj.size(); ++j)
      if (!as_mat(L.proj[j].get(), w.layers[i].m[j])) return {};
    w.layers[i].ln1 = L.attn_norm.data_ptr<float>();
    w.layers[i].ln2 = L.ffn_norm.data_ptr<float>();
  }
  if (lm_head_) {
    if (!as_mat(lm_head_.get(), w.head)) return {};
  } else {
    w.head.w = embed_tokens_.data_ptr<float>(), w.head.n = cfg_.vocab_size, w.head.k = cfg_.hidden_size;
  }
  w.embed = embed_tokens_.data_ptr<float>();
  w.final_norm = norm_.data_ptr<float>();
  w.inv_freq = rope_inv_freq_.data_ptr<float>();
  auto logits = torch::empty({1, 1, cfg_.vocab_size}, torch::kFloat32);
  infer::decode_step(w, kv, cache.length, token, logits.data_ptr<float>());
  cache.length += 1;
  g_fused_steps.fetch_add(1, std::memory_order_relaxed);
  return logits;
}

}  // namespace llmopt::model
