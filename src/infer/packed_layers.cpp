#include "infer/packed_layers.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "io/gptq.h"

namespace llmopt::infer {
namespace {

using nlohmann::json;

// Buffers a bound projection owns (copies of the checkpoint's bytes, or converted GPTQ storage).
struct Owned {
  std::vector<std::vector<uint8_t>> buffers;
  kernels::IntNStorage intn;  // GPTQ
};

std::string shape_text(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

class Binder {
 public:
  Binder(const io::Checkpoint& ckpt, const std::string& module, bool copy)
      : ckpt_(ckpt), module_(module), copy_(copy), owned_(std::make_shared<Owned>()) {}

  // The bytes of `<module>#<name>` after checking its dtype and shape; copied when asked or when
  // the checkpoint's bytes are not aligned for `align`.
  const uint8_t* tensor(const std::string& name, DType dt, const std::vector<int64_t>& shape, size_t align) {
    const std::string full = module_ + "#" + name;
    const io::TensorView* t = ckpt_.find(full);
    LLMOPT_CHECK_INPUT(t != nullptr, "[infer] {}: missing tensor '{}' of a packed layer", ckpt_.path, full);
    LLMOPT_CHECK_INPUT(t->dtype == dt && t->shape == shape, "[infer] {}: tensor '{}' is {} {}, expected {} {}",
                       ckpt_.path, full, dtype_name(t->dtype), shape_text(t->shape), dtype_name(dt),
                       shape_text(shape));
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    LLMOPT_CHECK_INPUT(t->nbytes == n * dtype_block_bytes(dt), "[infer] {}: tensor '{}' holds {} bytes, expected {}",
                       ckpt_.path, full, t->nbytes, n * dtype_block_bytes(dt));
    bytes_ += t->nbytes;
    if (!copy_ && reinterpret_cast<uintptr_t>(t->data) % align == 0) return t->data;
    auto& b = owned_->buffers.emplace_back(t->data, t->data + t->nbytes);
    return b.data();
  }
  // The dtype of `<module>#<name>` (F16 when absent: tensor() then names it missing).
  DType dtype_of(const std::string& name) const {
    const io::TensorView* t = ckpt_.find(module_ + "#" + name);
    return t ? t->dtype : DType::F16;
  }
  const json& meta_entry() const { return ckpt_.metadata.at(kStoredLayersKey).at(module_); }
  std::string where() const { return ckpt_.path + ": " + module_; }
  PackedProjection finish(PackedProjection p) {
    p.owned = owned_;
    p.bytes = bytes_;
    return p;
  }
  std::shared_ptr<Owned> owned() const { return owned_; }

 private:
  const io::Checkpoint& ckpt_;
  const std::string& module_;
  bool copy_;
  std::shared_ptr<Owned> owned_;
  int64_t bytes_ = 0;
};

PackedProjection bind_intn(Binder& b, const json& meta, int64_t out, int64_t in) {
  kernels::IntNMatrix m;
  bool act_order = false;
  try {
    m.bits = meta.at("bits").get<int>();
    m.group = meta.at("group_size").get<int64_t>();
    m.sym = meta.at("sym").get<bool>();
    act_order = meta.value("act_order", false);
    m.cols = meta.at("in_features").get<int64_t>();
  } catch (const json::exception& e) {
    throw_input("[infer] {}: intn layer meta needs bits, group_size, sym, in_features: {}", b.where(), e.what());
  }
  kernels::intn_check_bits(m.bits, b.where().c_str());
  LLMOPT_CHECK_INPUT(m.cols == in, "[infer] {}: intn in_features {}, the architecture implies {}", b.where(), m.cols, in);
  m.rows = out;
  if (m.group >= m.cols) m.group = -1;
  m.codes = b.tensor("qweight", DType::U8, {out, m.code_row_bytes()}, 1);
  if (b.dtype_of("scales") == DType::F32) {  // exact f32 scales (kernels/intn.h scales_f32)
    m.scales_f32 = reinterpret_cast<const float*>(b.tensor("scales", DType::F32, {out, m.groups()}, 4));
    for (int64_t i = 0; i < out * m.groups(); ++i)
      LLMOPT_CHECK_INPUT(m.scales_f32[i] > 0.0f && std::isfinite(m.scales_f32[i]),
                         "[infer] {}#scales: entry {} is not a positive finite f32 ({})", b.where(), i, m.scales_f32[i]);
  } else {
    m.scales = reinterpret_cast<const uint16_t*>(b.tensor("scales", DType::F16, {out, m.groups()}, 2));
    for (int64_t i = 0; i < out * m.groups(); ++i) {
      const uint16_t h = m.scales[i];
      LLMOPT_CHECK_INPUT((h & 0x8000u) == 0 && (h & 0x7c00u) != 0x7c00u && h != 0,
                         "[infer] {}#scales: entry {} is not a positive finite f16 (bits 0x{:04x})", b.where(), i, h);
    }
  }
  if (!m.sym) m.zeros = b.tensor("qzeros", DType::U8, {out, m.zero_row_bytes()}, 1);
  if (act_order) {
    m.g_idx = reinterpret_cast<const int32_t*>(b.tensor("g_idx", DType::I32, {in}, 4));
    for (int64_t j = 0; j < in; ++j)
      LLMOPT_CHECK_INPUT(m.g_idx[j] >= 0 && m.g_idx[j] < m.groups(), "[infer] {}#g_idx[{}] = {} is outside [0, {})",
                         b.where(), j, m.g_idx[j], m.groups());
  }
  PackedProjection p;
  p.kind = PackedProjection::Kind::IntN;
  p.intn = m;
  return b.finish(p);
}

PackedProjection bind_nf4(Binder& b, const json& meta, int64_t out, int64_t in) {
  kernels::NF4Matrix m;
  try {
    m.double_quant = meta.at("double_quant").get<bool>();
    m.cols = meta.at("in_features").get<int64_t>();
  } catch (const json::exception& e) {
    throw_input("[infer] {}: nf4 layer meta needs double_quant, in_features: {}", b.where(), e.what());
  }
  LLMOPT_CHECK_INPUT(m.cols == in, "[infer] {}: nf4 in_features {}, the architecture implies {}", b.where(), m.cols, in);
  m.rows = out;
  const int64_t n_abs = out * m.blocks_per_row();
  m.codes = b.tensor("qweight", DType::U8, {out, m.code_row_bytes()}, 1);
  auto finite = [&](const float* v, int64_t n, const char* name) {
    for (int64_t i = 0; i < n; ++i)
      LLMOPT_CHECK_INPUT(std::isfinite(v[i]), "[infer] {}#{}: entry {} is {}", b.where(), name, i, v[i]);
  };
  if (m.double_quant) {
    const int64_t n_sc = (n_abs + kernels::kNF4DoubleQuantBlock - 1) / kernels::kNF4DoubleQuantBlock;
    m.absmax_codes = reinterpret_cast<const int8_t*>(b.tensor("absmax_codes", DType::I8, {n_abs}, 1));
    m.absmax_scales = reinterpret_cast<const float*>(b.tensor("absmax_scales", DType::F32, {n_sc}, 4));
    float offset = 0.0f;
    std::memcpy(&offset, b.tensor("absmax_offset", DType::F32, {1}, 1), 4);
    m.absmax_offset = offset;
    finite(m.absmax_scales, n_sc, "absmax_scales");
    finite(&m.absmax_offset, 1, "absmax_offset");
  } else {
    m.absmax = reinterpret_cast<const float*>(b.tensor("absmax", DType::F32, {n_abs}, 4));
    finite(m.absmax, n_abs, "absmax");
  }
  PackedProjection p;
  p.kind = PackedProjection::Kind::NF4;
  p.nf4 = m;
  return b.finish(p);
}

}  // namespace

bool native_stored_kind(std::string_view kind) { return kind == "intn" || kind == "nf4"; }

bool has_packed_projection(const io::Checkpoint& ckpt, const std::string& module) {
  if (io::has_gptq_module(ckpt, module)) return true;
  const auto it = ckpt.metadata.find(kStoredLayersKey);
  return it != ckpt.metadata.end() && it->is_object() && it->contains(module);
}

PackedProjection bind_packed_projection(const io::Checkpoint& ckpt, const std::string& module, int64_t out, int64_t in,
                                        bool copy) {
  Binder b(ckpt, module, copy);
  if (io::has_gptq_module(ckpt, module)) {
    // GPTQ packs codes along the input dimension: converted once into row-major int-N storage.
    auto owned = b.owned();
    owned->intn = io::load_gptq_module(ckpt, module, out, in);
    const kernels::IntNStorage& s = owned->intn;
    PackedProjection p;
    p.kind = PackedProjection::Kind::IntN;
    p.intn = s.view();
    p.owned = owned;
    p.bytes = static_cast<int64_t>(s.codes.size() + 2 * s.scales.size() + 4 * s.scales_f32.size() + s.zeros.size() +
                                   4 * s.g_idx.size());
    return p;
  }
  const json& e = b.meta_entry();
  const std::string kind = e.is_object() ? e.value("kind", std::string()) : std::string();
  const json meta = e.is_object() ? e.value("meta", json::object()) : json::object();
  if (kind == "intn") return bind_intn(b, meta, out, in);
  if (kind == "nf4") return bind_nf4(b, meta, out, in);
  throw_input("[infer] {}: layer kind '{}' is not one the native engine reads as stored (intn, nf4)", b.where(), kind);
}

}  // namespace llmopt::infer
