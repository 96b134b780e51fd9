#include "io/gguf_lora.h"

#include <cstring>
#include <map>

#include <fmt/ranges.h>

#include "core/error.h"
#include "io/architecture.h"
#include "io/checkpoint_tensors.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "kernels/convert.h"

namespace llmopt::io {
namespace {

constexpr const char* kSuffixA = ".lora_a";
constexpr const char* kSuffixB = ".lora_b";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), std::string::npos, suffix) == 0;
}

void check_architecture(const std::string& arch, const std::string& where) {
  LLMOPT_CHECK_INPUT(arch == "llama" || arch == "mistral" || arch == "qwen2",
                     "[gguf-lora] {}: architecture '{}' is not one llmopt writes adapters for (llama, mistral, qwen2)",
                     where, arch);
}

// The projection a module path names, with the checks every adapter tensor needs.
arch::LinearInfo projection(const ModelConfig& cfg, const std::string& module_path, const std::string& where) {
  LLMOPT_CHECK_INPUT(!(module_path == arch::module_path(arch::Role::Output) && cfg.tie_word_embeddings),
                     "[gguf-lora] {}: an adapter on lm_head cannot apply in llama.cpp when the embeddings are tied "
                     "(its GGUF has no output.weight); train without lm_head in target_modules, or merge the adapter",
                     where);
  const auto li = arch::find_linear(cfg, module_path);
  LLMOPT_CHECK_INPUT(li.has_value(), "[gguf-lora] {}: '{}' is not a projection of the base model", where,
                     module_path);
  return *li;
}

// Bytes of `v` as `type` (F32 or F16).
std::vector<uint8_t> encode(const std::vector<float>& v, DType type) {
  std::vector<uint8_t> out;
  if (type == DType::F32) {
    out.resize(v.size() * 4);
    std::memcpy(out.data(), v.data(), out.size());
  } else {
    out.resize(v.size() * 2);
    kernels::convert_f32_to_f16(v.data(), reinterpret_cast<uint16_t*>(out.data()), static_cast<int64_t>(v.size()));
  }
  return out;
}

}  // namespace

bool gguf_permutes_qk(const std::string& architecture) { return architecture == "llama"; }

void write_gguf_lora(const std::string& path, const ModelConfig& cfg, const GgufLoraAdapter& a, DType type) {
  check_architecture(a.architecture, path);
  LLMOPT_CHECK_INPUT(type == DType::F32 || type == DType::F16, "[gguf-lora] {}: adapter tensors are written as f32 "
                     "or f16, not {}", path, dtype_name(type));
  LLMOPT_CHECK_INPUT(!a.pairs.empty(), "[gguf-lora] {}: the adapter has no LoRA tensors", path);
  std::vector<GgufKeyValue> kvs;
  kvs.emplace_back("general.architecture", GgufValue::make_string(a.architecture));
  kvs.emplace_back("general.type", GgufValue::make_string("adapter"));
  kvs.emplace_back("general.name", GgufValue::make_string("llmopt LoRA adapter"));
  kvs.emplace_back("adapter.type", GgufValue::make_string("lora"));
  kvs.emplace_back("adapter.lora.alpha", GgufValue::make_f32(a.alpha));

  std::vector<std::vector<uint8_t>> buffers;
  buffers.reserve(a.pairs.size() * 2);
  std::vector<GgufOutTensor> tensors;
  const uint32_t ggml_type = ggml_type_for(type);
  const int64_t elem = type == DType::F32 ? 4 : 2;
  for (const auto& p : a.pairs) {
    const arch::LinearInfo li = projection(cfg, p.module_path, path);
    LLMOPT_CHECK_INPUT(p.r > 0 && static_cast<int64_t>(p.A.size()) == p.r * li.in &&
                           static_cast<int64_t>(p.B.size()) == li.out * p.r,
                       "[gguf-lora] {}: {}: lora_A must be [r={}, in={}] and lora_B [out={}, r={}], found {} and {} "
                       "values",
                       path, p.module_path, p.r, li.in, li.out, p.r, p.A.size(), p.B.size());
    std::vector<float> b = p.B;
    if (li.permute_heads > 0 && gguf_permutes_qk(a.architecture)) {
      // B's rows are the output rows of W: permuted into GGUF's interleaved RoPE order as W's are.
      permute_rope_rows(reinterpret_cast<const uint8_t*>(p.B.data()), reinterpret_cast<uint8_t*>(b.data()), li.out,
                        p.r * 4, li.permute_heads, /*to_rotate_half=*/false);
    }
    const std::string base = arch::gguf_name(li.role, li.layer);
    buffers.push_back(encode(p.A, type));
    tensors.push_back({base + kSuffixA, ggml_type, {p.r, li.in}, buffers.back().data(), p.r * li.in * elem});
    buffers.push_back(encode(b, type));
    tensors.push_back({base + kSuffixB, ggml_type, {li.out, p.r}, buffers.back().data(), li.out * p.r * elem});
  }
  write_gguf_file(path, kvs, tensors);
}

GgufLoraAdapter read_gguf_lora(const std::string& path, const ModelConfig& cfg) {
  const GgufFile g = GgufFile::open(path);
  const auto str = [&](const char* key) { return g.find(key) ? g.get_string(key) : std::string(); };
  LLMOPT_CHECK_INPUT(str("general.type") == "adapter", "[gguf-lora] {}: general.type is '{}', expected 'adapter'",
                     path, str("general.type"));
  LLMOPT_CHECK_INPUT(str("adapter.type") == "lora", "[gguf-lora] {}: adapter.type is '{}', expected 'lora'", path,
                     str("adapter.type"));
  GgufLoraAdapter a;
  a.architecture = str("general.architecture");
  check_architecture(a.architecture, path);
  a.alpha = g.find("adapter.lora.alpha") ? g.get_f32("adapter.lora.alpha") : 0.0f;

  struct Half {
    const GgufTensorInfo* a = nullptr;
    const GgufTensorInfo* b = nullptr;
  };
  std::map<std::string, Half> halves;  // by GGUF weight name, in name order
  std::vector<std::string> order;
  for (const auto& t : g.tensors()) {
    const bool is_a = ends_with(t.name, kSuffixA), is_b = ends_with(t.name, kSuffixB);
    if (!is_a && !is_b && ends_with(t.name, "_norm.weight")) continue;  // llama.cpp skips these too
    LLMOPT_CHECK_INPUT(is_a || is_b, "[gguf-lora] {}: tensor '{}' is neither a .lora_a nor a .lora_b", path, t.name);
    const std::string weight = t.name.substr(0, t.name.size() - std::strlen(kSuffixA));
    if (!halves.count(weight)) order.push_back(weight);
    (is_a ? halves[weight].a : halves[weight].b) = &t;
  }
  for (const auto& weight : order) {
    const Half& h = halves[weight];
    LLMOPT_CHECK_INPUT(h.a && h.b, "[gguf-lora] {}: '{}' lacks its {}", path, weight, h.a ? kSuffixB : kSuffixA);
    const auto named = arch::parse_gguf_name(weight);
    LLMOPT_CHECK_INPUT(named && !named->bias && arch::describe(named->role).linear,
                       "[gguf-lora] {}: '{}' is not a projection llmopt knows", path, weight);
    GgufLoraPair p;
    p.module_path = arch::module_path(named->role, named->layer);
    const arch::LinearInfo li = projection(cfg, p.module_path, path);
    LLMOPT_CHECK_INPUT(h.a->shape.size() == 2 && h.b->shape.size() == 2 && h.a->shape[1] == li.in &&
                           h.b->shape[0] == li.out && h.a->shape[0] == h.b->shape[1],
                       "[gguf-lora] {}: '{}': lora_a must be ne [in={}, r] and lora_b ne [r, out={}], found ne [{}] "
                       "and [{}]",
                       path, weight, li.in, li.out, fmt::join(h.a->ne, ", "), fmt::join(h.b->ne, ", "));
    p.r = h.a->shape[0];
    for (const GgufTensorInfo* t : {h.a, h.b}) {
      LLMOPT_CHECK_INPUT(t->dtype.has_value(), "[gguf-lora] {}: tensor '{}' has a ggml type llmopt does not read", path,
                         t->name);
      TensorView v;
      v.name = t->name;
      v.dtype = *t->dtype;
      v.shape = t->shape;
      v.data = t->data;
      v.nbytes = t->nbytes;
      (t == h.a ? p.A : p.B) = tensor_to_f32(v);
    }
    if (li.permute_heads > 0 && gguf_permutes_qk(a.architecture)) {
      std::vector<float> b(p.B.size());
      permute_rope_rows(reinterpret_cast<const uint8_t*>(p.B.data()), reinterpret_cast<uint8_t*>(b.data()), li.out,
                        p.r * 4, li.permute_heads, /*to_rotate_half=*/true);
      p.B = std::move(b);
    }
    a.pairs.push_back(std::move(p));
  }
  LLMOPT_CHECK_INPUT(!a.pairs.empty(), "[gguf-lora] {}: no LoRA tensors", path);
  return a;
}

}  // namespace llmopt::io
