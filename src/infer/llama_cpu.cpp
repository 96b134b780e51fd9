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

// make_cache, prefill and decode: src/infer/forward_cpu.cpp.
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
