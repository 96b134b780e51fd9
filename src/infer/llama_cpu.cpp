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
#include "infer/packed_layers.h"
#include "io/architecture.h"
#include "io/checkpoint_tensors.h"
#include "kernels/gemv.h"
#include "kernels/repack.h"
#include "kernels/vec_math.h"

namespace llmopt::infer {
namespace {

constexpr size_t kHuge = size_t{2} << 20;
constexpr int64_t kAlignBytes = 64;  // alignment of every tensor in the arena

}  // namespace

void* hugepage_alloc(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, kHuge, std::max<size_t>(bytes, 1)) != 0) return nullptr;
  if (bytes >= kHuge) madvise(p, bytes / kHuge * kHuge, MADV_HUGEPAGE);
  return p;
}

CpuLlama::CpuLlama(const io::Checkpoint& ckpt, Storage storage) : arena_(nullptr, std::free) {
  io::validate_checkpoint_tensors(ckpt, "infer");
  const ModelConfig& c = ckpt.config;
  w_.cfg = c;
  // Arena layout: every tensor at a 64-byte aligned offset, in the architecture description's
  // order. Projections stored in a type the packed GEMV reads (ggml blocks, f16, bf16) stay in that
  // type: a 4-bit model runs at 4-bit size and bandwidth. Everything else is converted to f32.
  // Q4_0 / Q4_K projections with a multiple of 8 rows are held in kernels/repack.h's 8-row
  // interleaved form instead of the file's blocks (Copy only: a borrowed tensor stays as it lies),
  // which the int8-activation decode GEMV reads at about twice the speed; the arena holds that
  // form only, never both.
  struct Slot {
    int64_t offset = 0;  // bytes
    DType type = DType::F32;
    const uint8_t* borrowed = nullptr;  // used where it lies (Borrow)
    bool repacked = false;
    int64_t n = 0, k = 0;
  };
  std::unordered_map<std::string, Slot> slots;
  // Int-N / NF4 projections (infer/packed_layers.h) keep their own storage: views of the
  // checkpoint's bytes (Borrow) or of copies (Copy), never a dense f32 matrix.
  std::unordered_map<std::string, const PackedProjection*> packed_views;
  int64_t total = 0;
  io::arch::for_each_tensor(c, [&](const io::arch::TensorInfo& t) {
    if (io::arch::describe(t.role).linear && !t.bias && t.shape.size() == 2) {
      const std::string module = t.hf_name.substr(0, t.hf_name.size() - std::string(".weight").size());
      if (has_packed_projection(ckpt, module)) {
        packed_.push_back(std::make_unique<PackedProjection>(
            bind_packed_projection(ckpt, module, t.shape[0], t.shape[1], storage == Storage::Copy)));
        weight_bytes_ += packed_.back()->bytes;
        packed_views.emplace(t.hf_name, packed_.back().get());
        return;
      }
    }
    const io::TensorView& v = ckpt.get(t.hf_name);
    Slot s;
    s.offset = total;
    const bool packed = io::arch::describe(t.role).linear && !t.bias && v.dtype != DType::F32 &&
                        kernels::gemv_supports(v.dtype);
    s.type = packed ? v.dtype : DType::F32;
    if (packed && storage == Storage::Copy && t.shape.size() == 2 &&
        kernels::repack_supports(v.dtype, t.shape[0], t.shape[1])) {
      s.repacked = true, s.n = t.shape[0], s.k = t.shape[1];
    }
    const int64_t bytes = s.repacked ? kernels::repacked_bytes(s.type, s.n, s.k) : packed ? v.nbytes : v.numel() * 4;
    weight_bytes_ += bytes;
    // Borrowed when already in the engine's type and aligned for its loads (f32: 4 bytes; blocks
    // are read bytewise / with unaligned loads).
    if (storage == Storage::Borrow && v.dtype == s.type &&
        (s.type != DType::F32 || reinterpret_cast<uintptr_t>(v.data) % alignof(float) == 0)) {
      s.borrowed = v.data;
    } else {
      s.offset = total;
      total += (bytes + kAlignBytes - 1) / kAlignBytes * kAlignBytes;
    }
    slots.emplace(t.hf_name, s);
  });
  arena_bytes_ = total;
  if (storage == Storage::Borrow) borrowed_ = ckpt.storage;
  arena_.reset(static_cast<float*>(hugepage_alloc(static_cast<size_t>(total))));
  if (!arena_) throw std::bad_alloc();
  uint8_t* base = reinterpret_cast<uint8_t*>(arena_.get());
  for (const auto& [name, slot] : slots) {
    const io::TensorView& v = ckpt.get(name);
    if (slot.borrowed != nullptr) continue;
    if (slot.type == DType::F32) {
      io::tensor_to_f32_into(v, reinterpret_cast<float*>(base + slot.offset));
    } else if (slot.repacked) {
      kernels::repack_rows(slot.type, v.data, base + slot.offset, slot.n, slot.k);
    } else {
      std::memcpy(base + slot.offset, v.data, static_cast<size_t>(v.nbytes));
    }
  }
  auto at = [&](const std::string& name) -> const float* {
    const auto it = slots.find(name);
    if (it == slots.end()) return nullptr;
    return reinterpret_cast<const float*>(it->second.borrowed ? it->second.borrowed : base + it->second.offset);
  };
  auto type_of = [&](const std::string& name) { return slots.at(name).type; };
  auto repacked = [&](const std::string& name) { return slots.at(name).repacked; };
  // Binds a projection's weight [n, k]: packed layer views or arena/borrowed rows.
  auto bind = [&](Matrix& m, const io::arch::TensorInfo& t) {
    m.n = t.shape[0], m.k = t.shape[1];
    if (const auto it = packed_views.find(t.hf_name); it != packed_views.end()) {
      const PackedProjection& p = *it->second;
      m.type = DType::U8, m.repacked = false;
      if (p.kind == PackedProjection::Kind::IntN) {
        m.intn = &p.intn, m.w = p.intn.codes;
      } else {
        m.nf4 = &p.nf4, m.w = p.nf4.codes;
      }
      return;
    }
    m.w = at(t.hf_name), m.type = type_of(t.hf_name), m.repacked = repacked(t.hf_name);
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
      bind(w_.head, t);
    } else if (t.role == Role::AttnNorm) {
      w_.layers[static_cast<size_t>(t.layer)].ln1 = p;
    } else if (t.role == Role::FfnNorm) {
      w_.layers[static_cast<size_t>(t.layer)].ln2 = p;
    } else if (const int j = io::arch::layer_linear_index(t.role); j >= 0) {
      Matrix& m = w_.layers[static_cast<size_t>(t.layer)].m[static_cast<size_t>(j)];
      if (t.bias) {
        m.bias = p;
      } else {
        bind(m, t);
      }
    }
  });
  if (c.tie_word_embeddings) {
    w_.head.w = w_.embed, w_.head.n = c.vocab_size, w_.head.k = c.hidden_size;
    w_.head.type = DType::F32, w_.head.repacked = false, w_.head.intn = nullptr, w_.head.nf4 = nullptr;
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
    out.model->set_int8_activations(true);
    if (ckpt.tokenizer.kind != io::TokenizerSource::Kind::None)
      out.tokenizer = tok::load_tokenizer(ckpt.tokenizer, static_cast<int32_t>(ckpt.config.vocab_size));
  }  // the checkpoint's file mappings are released here
  malloc_trim(0);  // and conversion temporaries handed back
  return out;
}

}  // namespace llmopt::infer
