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
#include "io/architecture.h"
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

  // Bind every tensor by its role in the architecture description.
  inv_freq_ = rope_inv_freq(c);
  w_.inv_freq = inv_freq_.data();
  w_.layers.resize(static_cast<size_t>(c.num_hidden_layers));
  io::arch::for_each_tensor(c, [&](const io::arch::TensorInfo& t) {
    const float* p = at(t.hf_name);
    using io::arch::Role;
    if (t.role == Role::TokenEmbd) {
      w_.embed = p;
    } else if (t.role == Role::OutputNorm) {
      w_.final_norm = p;
    } else if (t.role == Role::Output) {
      w_.head.w = p, w_.head.n = t.shape[0], w_.head.k = t.shape[1];
    } else if (t.role == Role::AttnNorm) {
      w_.layers[static_cast<size_t>(t.layer)].ln1 = p;
    } else if (t.role == Role::FfnNorm) {
      w_.layers[static_cast<size_t>(t.layer)].ln2 = p;
    } else if (const int j = io::arch::layer_linear_index(t.role); j >= 0) {
      Matrix& m = w_.layers[static_cast<size_t>(t.layer)].m[static_cast<size_t>(j)];
      if (t.bias) {
        m.bias = p;
      } else {
        m.w = p, m.n = t.shape[0], m.k = t.shape[1];
      }
    }
  });
  if (c.tie_word_embeddings) w_.head.w = w_.embed, w_.head.n = c.vocab_size, w_.head.k = c.hidden_size;
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
