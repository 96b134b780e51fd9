#include "io/onnx_graph.h"

#include <onnx/checker.h>
#include <onnx/shape_inference/implementation.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <set>

#include "core/error.h"
#include "core/half.h"
#include "core/log.h"
#include "io/atomic_file.h"
#include "io/onnx_optimized.h"

namespace llmopt::io {
namespace fs = std::filesystem;
using onnx::TensorProto;

namespace {

// The IR version each opset came with (onnx.helper.VERSION_TABLE): ORT and the checker accept
// a model whose IR version is at least the one of its opset.
int64_t ir_version_for(int64_t opset) {
  if (opset <= 14) return 7;
  if (opset <= 18) return 8;
  if (opset <= 20) return 9;
  return 10;
}

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
std::map<std::string, OnnxLinearEmitter>& registry() {
  static std::map<std::string, OnnxLinearEmitter> r;
  return r;
}

// One dimension of a graph input/output: a fixed size or a named dynamic axis.
struct Dim {
  int64_t value = -1;
  std::string param;
  Dim(int64_t v) : value(v) {}                // NOLINT(google-explicit-constructor)
  Dim(const char* p) : param(p) {}            // NOLINT(google-explicit-constructor)
  Dim(std::string p) : param(std::move(p)) {} // NOLINT(google-explicit-constructor)
};

void set_value_info(onnx::ValueInfoProto* vi, const std::string& name, int32_t elem, const std::vector<Dim>& dims) {
  vi->set_name(name);
  auto* tt = vi->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem);
  auto* shape = tt->mutable_shape();
  for (const Dim& d : dims) {
    auto* sd = shape->add_dim();
    if (d.param.empty()) {
      sd->set_dim_value(d.value);
    } else {
      sd->set_dim_param(d.param);
    }
  }
}

}  // namespace

// ------------------------------------------------------------------ options

void validate_onnx_options(const OnnxExportOptions& o, const ModelConfig& cfg) {
  LLMOPT_CHECK_INPUT(o.opset >= kOnnxMinOpset && o.opset <= kOnnxMaxOpset,
                     "[onnx] opset {} is not supported: opset must be in {}..{} (e.g. opset: 17, the newest "
                     "libonnx's C++ checker verifies in-process)",
                     o.opset, kOnnxMinOpset, kOnnxMaxOpset);
  LLMOPT_CHECK_INPUT(o.dtype == DType::F32 || o.dtype == DType::F16,
                     "[onnx] dtype {} is not supported for ONNX export: use f32 or f16 (bf16 weights: export "
                     "with dtype f16 or f32)",
                     dtype_name(o.dtype));
  LLMOPT_CHECK_INPUT(o.external_data_threshold >= 0,
                     "[onnx] external_data threshold {} is negative: give a byte count >= 0 (0 = always external)",
                     o.external_data_threshold);
  LLMOPT_CHECK_INPUT(cfg.head_dim % 2 == 0, "[onnx] head_dim {} is odd: RoPE needs an even head_dim", cfg.head_dim);
  LLMOPT_CHECK_INPUT(cfg.num_key_value_heads > 0 && cfg.num_attention_heads % cfg.num_key_value_heads == 0,
                     "[onnx] {} attention heads are not a multiple of {} key/value heads", cfg.num_attention_heads,
                     cfg.num_key_value_heads);
  if (o.optimize) validate_onnx_optimized_options(o, cfg);
}

// ------------------------------------------------------------------ registry

void register_onnx_linear_kind(const std::string& kind, OnnxLinearEmitter emitter) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry()[kind] = std::move(emitter);
}

bool onnx_linear_kind_registered(const std::string& kind) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  return registry().count(kind) > 0;
}

std::vector<std::string> onnx_linear_kinds() {
  std::lock_guard<std::mutex> lock(registry_mutex());
  std::vector<std::string> out;
  for (const auto& [k, e] : registry()) out.push_back(k);
  return out;
}

// ------------------------------------------------------------------ builder

OnnxGraphBuilder::OnnxGraphBuilder(onnx::ModelProto& model, const OnnxExportOptions& o)
    : model_(model), graph_(model.mutable_graph()), o_(o) {
  act_ = o.dtype == DType::F16 ? TensorProto::FLOAT16 : TensorProto::FLOAT;
}

std::string OnnxGraphBuilder::fresh(const std::string& base) { return fmt::format("{}_{}", base, counter_++); }

onnx::NodeProto& OnnxGraphBuilder::node(const std::string& op, const std::vector<std::string>& inputs,
                                        std::vector<std::string> outputs, const std::string& domain) {
  onnx::NodeProto* n = graph_->add_node();
  n->set_op_type(op);
  if (!domain.empty()) n->set_domain(domain);
  if (outputs.empty()) outputs.push_back(fresh(op));
  n->set_name(fmt::format("{}_node_{}", op, graph_->node_size() - 1));
  for (const auto& i : inputs) n->add_input(i);
  for (const auto& out : outputs) n->add_output(out);
  return *n;
}

std::string OnnxGraphBuilder::op(const std::string& op, const std::vector<std::string>& inputs) {
  return node(op, inputs).output(0);
}

void OnnxGraphBuilder::use_domain(const std::string& domain, int64_t version) {
  for (const auto& imp : model_.opset_import())
    if (imp.domain() == domain) return;
  auto* imp = model_.add_opset_import();
  imp->set_domain(domain);
  imp->set_version(version);
}

std::string OnnxGraphBuilder::initializer(const std::string& name, int32_t elem_type,
                                          const std::vector<int64_t>& shape, const void* data, size_t nbytes) {
  TensorProto* t = graph_->add_initializer();
  t->set_name(name);
  t->set_data_type(elem_type);
  for (int64_t d : shape) t->add_dims(d);
  t->set_raw_data(data, nbytes);
  return name;
}

std::string OnnxGraphBuilder::f32_initializer(const std::string& name, const std::vector<int64_t>& shape,
                                              const float* values) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return initializer(name, TensorProto::FLOAT, shape, values, static_cast<size_t>(n) * sizeof(float));
}

std::string OnnxGraphBuilder::float_initializer(const std::string& name, const std::vector<int64_t>& shape,
                                                const float* values) {
  if (act_ == TensorProto::FLOAT) return f32_initializer(name, shape, values);
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<uint16_t> h(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) h[i] = f32_to_f16(values[i]);
  return initializer(name, TensorProto::FLOAT16, shape, h.data(), h.size() * sizeof(uint16_t));
}

std::string OnnxGraphBuilder::i64_initializer(const std::string& name, const std::vector<int64_t>& shape,
                                              const std::vector<int64_t>& values) {
  return initializer(name, TensorProto::INT64, shape, values.data(), values.size() * sizeof(int64_t));
}

std::string OnnxGraphBuilder::const_i64(const std::vector<int64_t>& values, bool scalar) {
  std::string key = scalar ? "s" : "v";
  for (int64_t v : values) key += fmt::format("_{}", v);
  if (auto it = consts_.find("i64" + key); it != consts_.end()) return it->second;
  std::string name = "const_i64_" + key;
  for (char& ch : name)
    if (ch == '-') ch = 'm';
  std::vector<int64_t> shape;
  if (!scalar) shape.push_back(static_cast<int64_t>(values.size()));
  i64_initializer(name, shape, values);
  consts_["i64" + key] = name;
  return name;
}

std::string OnnxGraphBuilder::const_f32(float v) {
  const std::string key = fmt::format("f32_{:a}", v);
  if (auto it = consts_.find(key); it != consts_.end()) return it->second;
  const std::string name = fmt::format("const_f32_{}", consts_.size());
  initializer(name, TensorProto::FLOAT, {}, &v, sizeof(v));
  consts_[key] = name;
  return name;
}

std::string OnnxGraphBuilder::const_act(float v) {
  if (act_ == TensorProto::FLOAT) return const_f32(v);
  const std::string key = fmt::format("f16_{:a}", v);
  if (auto it = consts_.find(key); it != consts_.end()) return it->second;
  const std::string name = fmt::format("const_f16_{}", consts_.size());
  const uint16_t h = f32_to_f16(v);
  initializer(name, TensorProto::FLOAT16, {}, &h, sizeof(h));
  consts_[key] = name;
  return name;
}

std::string OnnxGraphBuilder::cast(const std::string& x, int32_t to) {
  auto& n = node("Cast", {x});
  set_attr(n, "to", static_cast<int64_t>(to));
  return n.output(0);
}

std::string OnnxGraphBuilder::reduce_mean_last(const std::string& x) {
  if (o_.opset >= 18) {
    auto& n = node("ReduceMean", {x, const_i64({-1})});
    set_attr(n, "keepdims", int64_t{1});
    return n.output(0);
  }
  auto& n = node("ReduceMean", {x});
  set_attr(n, "axes", std::vector<int64_t>{-1});
  set_attr(n, "keepdims", int64_t{1});
  return n.output(0);
}

std::string OnnxGraphBuilder::emit_linear(const std::string& x, const OnnxLinearWeight& w) {
  LLMOPT_ASSERT(w.out > 0 && w.in > 0, "{}: projection without a shape", w.path);
  std::string y;
  bool dense = w.kind == "dense";
  if (!dense) {
    OnnxLinearEmitter emitter;
    {
      std::lock_guard<std::mutex> lock(registry_mutex());
      if (auto it = registry().find(w.kind); it != registry().end()) emitter = it->second;
    }
    if (emitter) {
      y = emitter(*this, x, w);
    } else {
      LLMOPT_CHECK_INPUT(!o_.require_packed,
                         "[onnx] {}: layer kind '{}' has no ONNX mapping (kinds with one: {}); export it "
                         "dequantized (onnx_dequantize: true, or --onnx-dequantize), or re-quantize into a kind that has one",
                         w.path, w.kind, onnx_linear_kinds().empty() ? "none yet" : fmt::format("{}", fmt::join(onnx_linear_kinds(), ", ")));
      LLMOPT_CHECK_INPUT(!w.dense.empty(), "[onnx] {}: layer kind '{}' has no ONNX mapping and no dense weight",
                         w.path, w.kind);
      log::warn("[onnx] {}: layer kind '{}' has no ONNX mapping: written as dense {}", w.path, w.kind,
                dtype_name(o_.dtype));
      dense = true;
    }
  }
  if (dense) {
    LLMOPT_ASSERT(static_cast<int64_t>(w.dense.size()) == w.out * w.in, "{}: dense weight has {} values, expected {}",
                  w.path, w.dense.size(), w.out * w.in);
    // MatMul multiplies x [.., in] by a [in, out] matrix: the initializer is Wᵀ.
    std::vector<float> t(w.dense.size());
    for (int64_t r = 0; r < w.out; ++r)
      for (int64_t c = 0; c < w.in; ++c) t[c * w.out + r] = w.dense[r * w.in + c];
    const std::string wt = float_initializer(w.path + ".weight.T", {w.in, w.out}, t.data());
    y = op("MatMul", {x, wt});
  }
  if (!w.bias.empty()) {
    LLMOPT_ASSERT(static_cast<int64_t>(w.bias.size()) == w.out, "{}: bias has {} values, expected {}", w.path,
                  w.bias.size(), w.out);
    y = op("Add", {y, float_initializer(w.path + ".bias", {w.out}, w.bias.data())});
  }
  return y;
}

void OnnxGraphBuilder::set_attr(onnx::NodeProto& n, const std::string& name, int64_t v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}
void OnnxGraphBuilder::set_attr(onnx::NodeProto& n, const std::string& name, float v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(v);
}
void OnnxGraphBuilder::set_attr(onnx::NodeProto& n, const std::string& name, const std::vector<int64_t>& v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}
void OnnxGraphBuilder::set_attr(onnx::NodeProto& n, const std::string& name, const std::string& v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}

// ------------------------------------------------------------------ decoder

OnnxSourceReader::OnnxSourceReader(const OnnxModelSource& src) : src_(src) {
  for (const auto& li : arch::linears(src.config)) linears_[{li.layer, static_cast<int>(li.role)}] = li;
}

std::vector<float> OnnxSourceReader::tensor(const std::string& name, const std::vector<int64_t>& shape) const {
  std::vector<float> t = src_.tensor(name);
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  LLMOPT_CHECK_INPUT(static_cast<int64_t>(t.size()) == n, "[onnx] tensor {} has {} values, expected {}", name,
                     t.size(), n);
  return t;
}

OnnxLinearWeight OnnxSourceReader::linear(int64_t layer, arch::Role role) const {
  auto it = linears_.find({layer, static_cast<int>(role)});
  LLMOPT_ASSERT(it != linears_.end(), "no projection for layer {} role {}", layer, static_cast<int>(role));
  const arch::LinearInfo& info = it->second;
  OnnxLinearWeight w = src_.linear(info);
  w.path = info.path;
  LLMOPT_CHECK_INPUT(w.out == info.out && w.in == info.in, "[onnx] {}: projection is [{}, {}], expected [{}, {}]",
                     info.path, w.out, w.in, info.out, info.in);
  LLMOPT_CHECK_INPUT(info.bias == !w.bias.empty(), "[onnx] {}: the configuration {} a bias, the model {} one",
                     info.path, info.bias ? "implies" : "has no", w.bias.empty() ? "has no" : "has");
  return w;
}

std::vector<float> OnnxSourceReader::inv_freq() const {
  const ModelConfig& c = src_.config;
  const int64_t half = c.head_dim / 2;
  std::vector<float> inv = src_.inv_freq;
  if (inv.empty()) {
    LLMOPT_CHECK_INPUT(c.rope_scaling.type == "none",
                       "[onnx] rope_scaling '{}' needs the model's inverse frequencies (OnnxModelSource::inv_freq)",
                       c.rope_scaling.type);
    for (int64_t i = 0; i < half; ++i)
      inv.push_back(static_cast<float>(
          1.0 / std::pow(c.rope_theta, static_cast<double>(2 * i) / static_cast<double>(c.head_dim))));
  }
  LLMOPT_CHECK_INPUT(static_cast<int64_t>(inv.size()) == half, "[onnx] inv_freq has {} values, expected {}",
                     inv.size(), half);
  return inv;
}

void emit_logits_output(OnnxGraphBuilder& g, const std::string& logits) {
  if (g.act_type() == TensorProto::FLOAT) {
    g.node("Identity", {logits}, {"logits"});
  } else {
    auto& n = g.node("Cast", {logits}, {"logits"});
    OnnxGraphBuilder::set_attr(n, "to", static_cast<int64_t>(TensorProto::FLOAT));
  }
}

namespace {

class DecoderBuilder {
 public:
  DecoderBuilder(const OnnxModelSource& src, const OnnxExportOptions& o, onnx::ModelProto& m)
      : rd_(src), c_(src.config), o_(o), g_(m, o) {}

  void build() {
    const bool kv = o_.variant == OnnxVariant::Kv;
    const int64_t H = c_.num_attention_heads, KV = c_.num_key_value_heads, hd = c_.head_dim;
    auto& graph = g_.graph();
    graph.set_name(kv ? "llmopt_decoder_with_past" : "llmopt_decoder");
    set_value_info(graph.add_input(), "input_ids", TensorProto::INT64, {"batch_size", "sequence_length"});
    set_value_info(graph.add_input(), "attention_mask", TensorProto::INT64,
                   {"batch_size", kv ? "total_sequence_length" : "sequence_length"});
    set_value_info(graph.add_input(), "position_ids", TensorProto::INT64, {"batch_size", "sequence_length"});
    const int64_t L = c_.num_hidden_layers;
    if (kv) {
      for (int64_t l = 0; l < L; ++l)
        for (const char* kvn : {"key", "value"})
          set_value_info(graph.add_input(), fmt::format("past_key_values.{}.{}", l, kvn), g_.act_type(),
                         {"batch_size", KV, "past_sequence_length", hd});
    }
    set_value_info(graph.add_output(), "logits", TensorProto::FLOAT,
                   {"batch_size", "sequence_length", c_.vocab_size});
    if (kv) {
      for (int64_t l = 0; l < L; ++l)
        for (const char* kvn : {"key", "value"})
          set_value_info(graph.add_output(), fmt::format("present.{}.{}", l, kvn), g_.act_type(),
                         {"batch_size", KV, "total_sequence_length", hd});
    }

    // Token embedding [vocab, dim]; with tied embeddings the same initializer is the output matrix.
    const std::string embd_name = arch::hf_name(arch::Role::TokenEmbd);
    const std::vector<float> embd = tensor(embd_name, {c_.vocab_size, c_.hidden_size});
    const std::string embd_init = g_.float_initializer(embd_name, {c_.vocab_size, c_.hidden_size}, embd.data());
    std::string h = g_.op("Gather", {embd_init, "input_ids"});  // [b, s, dim]

    build_rope();
    build_mask();

    for (int64_t l = 0; l < L; ++l) {
      const std::string x = rms_norm(h, arch::hf_name(arch::Role::AttnNorm, l));
      std::string q = project(x, l, arch::Role::AttnQ);
      std::string k = project(x, l, arch::Role::AttnK);
      std::string v = project(x, l, arch::Role::AttnV);
      q = heads(q, H);  // [b, H, s, hd]
      k = heads(k, KV);
      v = heads(v, KV);
      q = rope(q);
      k = rope(k);
      if (kv) {
        auto& nk = g_.node("Concat", {fmt::format("past_key_values.{}.key", l), k}, {fmt::format("present.{}.key", l)});
        OnnxGraphBuilder::set_attr(nk, "axis", int64_t{2});
        auto& nv = g_.node("Concat", {fmt::format("past_key_values.{}.value", l), v},
                           {fmt::format("present.{}.value", l)});
        OnnxGraphBuilder::set_attr(nv, "axis", int64_t{2});
        k = nk.output(0);  // [b, KV, T, hd]
        v = nv.output(0);
      }
      k = repeat_kv(k);  // [b, H, T, hd]
      v = repeat_kv(v);
      const std::string a = attention(q, k, v);  // [b, s, H*hd]
      h = g_.op("Add", {h, project(a, l, arch::Role::AttnOut)});

      const std::string y = rms_norm(h, arch::hf_name(arch::Role::FfnNorm, l));
      const std::string gate = project(y, l, arch::Role::FfnGate);
      const std::string up = project(y, l, arch::Role::FfnUp);
      const std::string silu = g_.op("Mul", {gate, g_.op("Sigmoid", {gate})});
      const std::string down = project(g_.op("Mul", {silu, up}), l, arch::Role::FfnDown);
      h = g_.op("Add", {h, down});
    }

    const std::string x = rms_norm(h, arch::hf_name(arch::Role::OutputNorm));
    std::string logits;
    if (c_.tie_word_embeddings) {
      auto& t = g_.node("Transpose", {embd_init});
      OnnxGraphBuilder::set_attr(t, "perm", std::vector<int64_t>{1, 0});
      logits = g_.op("MatMul", {x, t.output(0)});
    } else {
      logits = project(x, -1, arch::Role::Output);
    }
    emit_logits_output(g_, logits);
  }

 private:
  std::vector<float> tensor(const std::string& name, const std::vector<int64_t>& shape) {
    return rd_.tensor(name, shape);
  }

  // RMSNorm in float32: x / sqrt(mean(x²) + eps) · weight (HF LlamaRMSNorm; the product with the
  // weight in the activation type, as HF does in half precision).
  std::string rms_norm(const std::string& h, const std::string& weight_name) {
    const bool f16 = g_.act_type() == TensorProto::FLOAT16;
    const std::string x = f16 ? g_.cast(h, TensorProto::FLOAT) : h;
    const std::string var = g_.reduce_mean_last(g_.op("Mul", {x, x}));
    const std::string den = g_.op("Sqrt", {g_.op("Add", {var, g_.const_f32(static_cast<float>(c_.rms_norm_eps))})});
    std::string y = g_.op("Div", {x, den});
    if (f16) y = g_.cast(y, TensorProto::FLOAT16);
    const std::vector<float> w = tensor(weight_name, {c_.hidden_size});
    return g_.op("Mul", {y, g_.float_initializer(weight_name, {c_.hidden_size}, w.data())});
  }

  std::string project(const std::string& x, int64_t layer, arch::Role role) {
    return g_.emit_linear(x, rd_.linear(layer, role));
  }

  // [b, s, n·hd] -> [b, n, s, hd]
  std::string heads(const std::string& x, int64_t n) {
    const std::string r = g_.op("Reshape", {x, g_.const_i64({0, 0, n, c_.head_dim})});
    auto& t = g_.node("Transpose", {r});
    OnnxGraphBuilder::set_attr(t, "perm", std::vector<int64_t>{0, 2, 1, 3});
    return t.output(0);
  }

  // cos/sin [b, 1, s, hd] from position_ids: angle = position · inv_freq (float32), both halves
  // (HF LlamaRotaryEmbedding; Llama-3 scaling lives in inv_freq).
  void build_rope() {
    const int64_t half = c_.head_dim / 2;
    const std::vector<float> inv = rd_.inv_freq();
    const std::string inv_init = g_.f32_initializer("rope.inv_freq", {half}, inv.data());
    const std::string pos = g_.op("Unsqueeze", {g_.cast("position_ids", TensorProto::FLOAT), g_.const_i64({-1})});
    const std::string freqs = g_.op("Mul", {pos, inv_init});  // [b, s, half]
    auto& cat = g_.node("Concat", {freqs, freqs});
    OnnxGraphBuilder::set_attr(cat, "axis", int64_t{-1});
    const std::string emb = cat.output(0);  // [b, s, hd]
    cos_ = g_.op("Unsqueeze", {g_.op("Cos", {emb}), g_.const_i64({1})});
    sin_ = g_.op("Unsqueeze", {g_.op("Sin", {emb}), g_.const_i64({1})});
    if (g_.act_type() != TensorProto::FLOAT) {
      cos_ = g_.cast(cos_, g_.act_type());
      sin_ = g_.cast(sin_, g_.act_type());
    }
  }

  // x·cos + rotate_half(x)·sin, rotate_half(x) = [-x2, x1] (HF layout).
  std::string rope(const std::string& x) {
    const int64_t half = c_.head_dim / 2;
    const std::string axis = g_.const_i64({-1});
    const std::string x1 = g_.op("Slice", {x, g_.const_i64({0}), g_.const_i64({half}), axis});
    const std::string x2 = g_.op("Slice", {x, g_.const_i64({half}), g_.const_i64({c_.head_dim}), axis});
    auto& cat = g_.node("Concat", {g_.op("Neg", {x2}), x1});
    OnnxGraphBuilder::set_attr(cat, "axis", int64_t{-1});
    return g_.op("Add", {g_.op("Mul", {x, cos_}), g_.op("Mul", {cat.output(0), sin_})});
  }

  // Boolean mask [b, 1, s, T]: key j visible to query i (absolute position past+i) when
  // j <= past+i (and j > past+i-W with a sliding window W) and attention_mask[b, j] != 0.
  void build_mask() {
    const std::string zero = g_.const_i64({0}, true), one = g_.const_i64({1}, true);
    const std::string T = g_.op("Gather", {g_.op("Shape", {"attention_mask"}), one});
    const std::string S = g_.op("Gather", {g_.op("Shape", {"input_ids"}), one});
    const std::string past = g_.op("Sub", {T, S});
    const std::string kpos = g_.op("Range", {zero, T, one});                            // [T]
    const std::string qpos = g_.op("Unsqueeze", {g_.op("Range", {past, T, one}), g_.const_i64({1})});  // [s, 1]
    std::string allowed = g_.op("LessOrEqual", {kpos, qpos});                           // [s, T]
    if (c_.sliding_window > 0) {
      const std::string lo = g_.op("Sub", {qpos, g_.const_i64({c_.sliding_window}, true)});
      allowed = g_.op("And", {allowed, g_.op("Greater", {kpos, lo})});
    }
    const std::string pad = g_.op("Unsqueeze", {g_.cast("attention_mask", TensorProto::BOOL), g_.const_i64({1, 2})});
    mask_ = g_.op("And", {allowed, pad});  // [b, 1, s, T]
  }

  // [b, KV, T, hd] -> [b, H, T, hd]: each key/value head repeated H/KV times (HF repeat_kv).
  std::string repeat_kv(const std::string& x) {
    const int64_t H = c_.num_attention_heads, KV = c_.num_key_value_heads;
    if (H == KV) return x;
    const std::string u = g_.op("Unsqueeze", {x, g_.const_i64({2})});          // [b, KV, 1, T, hd]
    const std::string e = g_.op("Expand", {u, g_.const_i64({1, 1, H / KV, 1, 1})});  // [b, KV, rep, T, hd]
    return g_.op("Reshape", {e, g_.const_i64({0, H, -1, c_.head_dim})});
  }

  // softmax(q·kᵀ/√hd + mask)·v in float32 scores; returns [b, s, H·hd].
  std::string attention(const std::string& q, const std::string& k, const std::string& v) {
    const bool f16 = g_.act_type() == TensorProto::FLOAT16;
    auto& kt = g_.node("Transpose", {k});
    OnnxGraphBuilder::set_attr(kt, "perm", std::vector<int64_t>{0, 1, 3, 2});
    std::string s = g_.op("MatMul", {q, kt.output(0)});  // [b, H, s, T]
    if (f16) s = g_.cast(s, TensorProto::FLOAT);
    s = g_.op("Mul", {s, g_.const_f32(static_cast<float>(1.0 / std::sqrt(static_cast<double>(c_.head_dim))))});
    s = g_.op("Where", {mask_, s, g_.const_f32(std::numeric_limits<float>::lowest())});
    auto& sm = g_.node("Softmax", {s});
    OnnxGraphBuilder::set_attr(sm, "axis", int64_t{-1});
    std::string p = sm.output(0);
    if (f16) p = g_.cast(p, TensorProto::FLOAT16);
    const std::string o = g_.op("MatMul", {p, v});  // [b, H, s, hd]
    auto& t = g_.node("Transpose", {o});
    OnnxGraphBuilder::set_attr(t, "perm", std::vector<int64_t>{0, 2, 1, 3});
    return g_.op("Reshape", {t.output(0), g_.const_i64({0, 0, c_.num_attention_heads * c_.head_dim})});
  }

  OnnxSourceReader rd_;
  const ModelConfig& c_;
  OnnxExportOptions o_;
  OnnxGraphBuilder g_;
  std::string cos_, sin_, mask_;
};

}  // namespace

namespace {

// The graph at opset 17 when it only uses standard ops whose opset-17 schemas take the same inputs
// and attributes as at its own opset (18..21): the decoder's ops, with ReduceMean's axes (an input
// from opset 18 on) moved back to the attribute. nullopt for anything else (other domains, other
// ops, a non-constant axes input, Cast's saturate).
std::optional<onnx::ModelProto> opset17_equivalent(const onnx::ModelProto& m) {
  static const std::set<std::string> same = {"Add",   "And",   "Cast",    "Concat", "Cos",       "Div",
                                             "Expand", "Gather", "Greater", "Identity", "LessOrEqual",
                                             "MatMul", "Mul",   "Neg",     "Range",  "Reshape",   "Shape",
                                             "Sigmoid", "Sin",  "Slice",   "Softmax", "Sqrt",     "Sub",
                                             "Transpose", "Unsqueeze", "Where"};
  for (const auto& imp : m.opset_import())
    if (!(imp.domain().empty() || imp.domain() == "ai.onnx")) return std::nullopt;
  onnx::ModelProto e = m;
  e.set_ir_version(std::min<int64_t>(e.ir_version(), 8));
  for (auto& imp : *e.mutable_opset_import()) imp.set_version(kOnnxCheckerMaxOpset);
  std::map<std::string, const TensorProto*> inits;
  for (const auto& t : e.graph().initializer()) inits[t.name()] = &t;
  for (auto& n : *e.mutable_graph()->mutable_node()) {
    if (!n.domain().empty()) return std::nullopt;
    if (n.op_type() == "ReduceMean") {
      if (n.input_size() != 2) continue;
      auto it = inits.find(n.input(1));
      if (it == inits.end() || it->second->data_type() != TensorProto::INT64 || it->second->raw_data().empty())
        return std::nullopt;
      const std::string& raw = it->second->raw_data();
      std::vector<int64_t> axes(raw.size() / sizeof(int64_t));
      std::memcpy(axes.data(), raw.data(), axes.size() * sizeof(int64_t));
      n.mutable_input()->RemoveLast();
      OnnxGraphBuilder::set_attr(n, "axes", axes);
      continue;
    }
    if (!same.count(n.op_type())) return std::nullopt;
    for (const auto& a : n.attribute())
      if (a.name() == "saturate") return std::nullopt;
  }
  return e;
}

}  // namespace

onnx::ModelProto build_onnx_model(const OnnxModelSource& src, const OnnxExportOptions& o) {
  validate_onnx_options(o, src.config);
  onnx::ModelProto m;
  m.set_ir_version(ir_version_for(o.opset));
  m.set_producer_name("llmopt");
  if (!o.producer_version.empty()) m.set_producer_version(o.producer_version);
  auto* imp = m.add_opset_import();
  imp->set_domain("");
  imp->set_version(o.opset);
  if (o.optimize) {
    build_onnx_optimized_decoder(src, o, m);
    return m;
  }
  DecoderBuilder b(src, o, m);
  b.build();
  return m;
}

std::string check_onnx_model(const onnx::ModelProto& m) {
  int64_t opset = 0;
  for (const auto& imp : m.opset_import())
    if (imp.domain().empty() || imp.domain() == "ai.onnx") opset = imp.version();
  bool foreign_domain = false;
  for (const auto& imp : m.opset_import())
    if (!(imp.domain().empty() || imp.domain() == "ai.onnx")) foreign_domain = true;
  if (opset > kOnnxCheckerMaxOpset) {
    // libonnx 1.12 knows opsets up to 17: a graph of standard ops whose opset-17 schemas take the
    // same inputs and attributes is checked as its opset-17 equivalent; others are left to the
    // peer tests (onnx's Python checker at the real opset).
    const std::optional<onnx::ModelProto> eq = opset17_equivalent(m);
    if (!eq)
      return fmt::format("not checked in-process: libonnx {}'s checker and shape inference know opsets up to {} "
                         "(opset {}); the peer tests check it with onnx's Python checker",
                         "1.12", kOnnxCheckerMaxOpset, opset);
    return fmt::format("{} on its opset-{} equivalent (libonnx 1.12 knows opsets up to {}; onnx's Python checker "
                       "checks opset {} in the peer tests)",
                       check_onnx_model(*eq), kOnnxCheckerMaxOpset, kOnnxCheckerMaxOpset, opset);
  }
  // ORT's SimplifiedLayerNormalization (optimized graph) sits in the ai.onnx domain: give the
  // checker its schema rather than have it reject the op as unknown.
  if (foreign_domain) register_ort_onnx_domain_schemas();
  try {
    onnx::checker::check_model(m);
  } catch (const std::exception& e) {
    throw_run("[onnx] the ONNX checker rejects the graph: {}", e.what());
  }
  if (foreign_domain) return "ONNX checker passed (shape inference skipped: contrib-op domains)";
  try {
    onnx::ModelProto copy = m;
    onnx::shape_inference::InferShapes(copy, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(/*check_type=*/true, /*error_mode=*/1));
  } catch (const std::exception& e) {
    throw_run("[onnx] ONNX shape inference fails on the graph: {}", e.what());
  }
  return "ONNX checker and strict shape inference passed";
}

std::vector<std::string> write_onnx_model(onnx::ModelProto& m, const std::string& path,
                                          int64_t external_data_threshold) {
  std::vector<std::string> files;
  int64_t total = 0;
  for (const auto& t : m.graph().initializer()) total += static_cast<int64_t>(t.raw_data().size());
  // protobuf refuses to serialize a message of 2 GiB or more, whatever the threshold says.
  const bool external = total > external_data_threshold || total >= (int64_t{1} << 31) - (int64_t{64} << 20);
  if (external) {
    const std::string data_path = path + ".data";
    const std::string location = fs::path(data_path).filename().string();
    AtomicFile data(data_path);
    for (auto& t : *m.mutable_graph()->mutable_initializer()) {
      const std::string& raw = t.raw_data();
      if (raw.size() < 1024) continue;
      const uint64_t pad = (4096 - data.bytes_written() % 4096) % 4096;
      data.write_zeros(pad);
      const uint64_t offset = data.bytes_written();
      data.write(raw.data(), raw.size());
      t.set_data_location(TensorProto::EXTERNAL);
      auto add = [&](const std::string& k, const std::string& v) {
        auto* e = t.add_external_data();
        e->set_key(k);
        e->set_value(v);
      };
      add("location", location);
      add("offset", std::to_string(offset));
      add("length", std::to_string(raw.size()));
      t.clear_raw_data();
    }
    data.commit();
    files.push_back(data_path);
  }
  std::string bytes;
  LLMOPT_CHECK_INPUT(m.SerializeToString(&bytes), "[onnx] {}: the model could not be serialized", path);
  write_file_atomic(path, bytes);
  // An inline model written over an earlier external-data export: its data file would only mislead.
  if (!external) {
    std::error_code ec;
    fs::remove(path + ".data", ec);
  }
  files.insert(files.begin(), path);
  return files;
}

OnnxExportResult export_onnx(const OnnxModelSource& src, const OnnxExportOptions& o, const std::string& path) {
  onnx::ModelProto m = build_onnx_model(src, o);
  OnnxExportResult r;
  r.check_note = check_onnx_model(m);
  r.nodes = m.graph().node_size();
  r.initializers = m.graph().initializer_size();
  for (const auto& t : m.graph().initializer()) r.initializer_bytes += static_cast<int64_t>(t.raw_data().size());
  r.files = write_onnx_model(m, path, o.external_data_threshold);
  return r;
}

}  // namespace llmopt::io
