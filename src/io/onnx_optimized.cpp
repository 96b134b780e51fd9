#include "io/onnx_optimized.h"

#include <onnx/defs/schema.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <map>
#include <mutex>

#include "core/error.h"
#include "core/log.h"

namespace llmopt::io {
using onnx::TensorProto;

namespace {

constexpr const char* kMs = "com.microsoft";

void set_value_info(onnx::ValueInfoProto* vi, const std::string& name, int32_t elem,
                    const std::vector<std::string>& params, const std::vector<int64_t>& fixed) {
  // One dimension per entry: a non-empty param names a dynamic axis, otherwise fixed[i] is used.
  vi->set_name(name);
  auto* tt = vi->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem);
  auto* shape = tt->mutable_shape();
  for (size_t i = 0; i < params.size(); ++i) {
    auto* d = shape->add_dim();
    if (params[i].empty()) {
      d->set_dim_value(fixed[i]);
    } else {
      d->set_dim_param(params[i]);
    }
  }
}

class OptimizedDecoder {
 public:
  OptimizedDecoder(const OnnxModelSource& src, const OnnxExportOptions& o, onnx::ModelProto& m)
      : rd_(src), c_(src.config), o_(o), g_(m, o) {}

  void build() {
    const bool kv = o_.variant == OnnxVariant::Kv;
    const int64_t H = c_.num_attention_heads, KV = c_.num_key_value_heads, hd = c_.head_dim, L = c_.num_hidden_layers;
    g_.use_domain(kMs, 1);
    auto& graph = g_.graph();
    graph.set_name(kv ? "llmopt_decoder_with_past_optimized" : "llmopt_decoder_optimized");
    const std::string T = kv ? "total_sequence_length" : "sequence_length";
    set_value_info(graph.add_input(), "input_ids", TensorProto::INT64, {"batch_size", "sequence_length"}, {0, 0});
    set_value_info(graph.add_input(), "attention_mask", TensorProto::INT64, {"batch_size", T}, {0, 0});
    set_value_info(graph.add_input(), "position_ids", TensorProto::INT64, {"batch_size", "sequence_length"}, {0, 0});
    if (kv)
      for (int64_t l = 0; l < L; ++l)
        for (const char* w : {"key", "value"})
          set_value_info(graph.add_input(), fmt::format("past_key_values.{}.{}", l, w), g_.act_type(),
                         {"batch_size", "", "past_sequence_length", ""}, {0, KV, 0, hd});
    set_value_info(graph.add_output(), "logits", TensorProto::FLOAT, {"batch_size", "sequence_length", ""},
                   {0, 0, c_.vocab_size});
    if (kv)
      for (int64_t l = 0; l < L; ++l)
        for (const char* w : {"key", "value"})
          set_value_info(graph.add_output(), fmt::format("present.{}.{}", l, w), g_.act_type(),
                         {"batch_size", "", "total_sequence_length", ""}, {0, KV, 0, hd});

    const std::string embd_name = arch::hf_name(arch::Role::TokenEmbd);
    const std::vector<float> embd = tensor(embd_name, {c_.vocab_size, c_.hidden_size});
    const std::string embd_init = g_.float_initializer(embd_name, {c_.vocab_size, c_.hidden_size}, embd.data());
    std::string h = g_.op("Gather", {embd_init, "input_ids"});  // [b, s, dim]

    build_rope_caches();
    build_attention_lengths();

    // The residual stream h and the pending branch output `branch` that the next
    // SkipSimplifiedLayerNormalization adds to it (empty before the first layer).
    std::string branch;
    for (int64_t l = 0; l < L; ++l) {
      const std::string x = norm(h, branch, arch::hf_name(arch::Role::AttnNorm, l), /*want_sum=*/true);
      std::string q, k, v;
      project_qkv(x, l, q, k, v);
      q = rope(q);
      k = rope(k);
      auto& n = g_.node("GroupQueryAttention",
                        {q, k, v, kv ? fmt::format("past_key_values.{}.key", l) : "",
                         kv ? fmt::format("past_key_values.{}.value", l) : "", seqlens_k_, total_len_},
                        {g_.fresh("GroupQueryAttention"), kv ? fmt::format("present.{}.key", l) : g_.fresh("present_key"),
                         kv ? fmt::format("present.{}.value", l) : g_.fresh("present_value")},
                        kMs);
      OnnxGraphBuilder::set_attr(n, "num_heads", H);
      OnnxGraphBuilder::set_attr(n, "kv_num_heads", KV);
      OnnxGraphBuilder::set_attr(n, "scale", static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd))));
      // HF/Mistral: query i sees keys i-W+1..i; ORT's local window counts the keys left of i.
      if (c_.sliding_window > 0) OnnxGraphBuilder::set_attr(n, "local_window_size", c_.sliding_window - 1);
      branch = project(n.output(0), l, arch::Role::AttnOut);

      const std::string y = norm(h, branch, arch::hf_name(arch::Role::FfnNorm, l), /*want_sum=*/true);
      std::string gate, up;
      project_pair(y, l, arch::Role::FfnGate, arch::Role::FfnUp, gate, up);
      const std::string silu = g_.op("Mul", {gate, g_.op("Sigmoid", {gate})});
      branch = project(g_.op("Mul", {silu, up}), l, arch::Role::FfnDown);
    }
    const std::string x = norm(h, branch, arch::hf_name(arch::Role::OutputNorm), /*want_sum=*/false);

    std::string logits;
    if (c_.tie_word_embeddings) {
      auto& mm = g_.node("FusedMatMul", {x, embd_init}, {}, kMs);
      OnnxGraphBuilder::set_attr(mm, "transB", int64_t{1});
      OnnxGraphBuilder::set_attr(mm, "alpha", 1.0f);
      logits = mm.output(0);
    } else {
      logits = project(x, -1, arch::Role::Output);
    }
    emit_logits_output(g_, logits);
  }

 private:
  std::vector<float> tensor(const std::string& name, const std::vector<int64_t>& shape) {
    return rd_.tensor(name, shape);
  }

  // RMSNorm of h (+ branch): SimplifiedLayerNormalization before the first layer, then
  // SkipSimplifiedLayerNormalization, whose output 3 (h + branch) becomes the residual stream
  // `h` when want_sum (not for the final norm).
  std::string norm(std::string& h, const std::string& branch, const std::string& weight_name, bool want_sum) {
    const std::vector<float> w = tensor(weight_name, {c_.hidden_size});
    const std::string gamma = g_.float_initializer(weight_name, {c_.hidden_size}, w.data());
    const float eps = static_cast<float>(c_.rms_norm_eps);
    if (branch.empty()) {
      auto& n = g_.node("SimplifiedLayerNormalization", {h, gamma});
      OnnxGraphBuilder::set_attr(n, "axis", int64_t{-1});
      OnnxGraphBuilder::set_attr(n, "epsilon", eps);
      OnnxGraphBuilder::set_attr(n, "stash_type", int64_t{1});
      return n.output(0);
    }
    std::vector<std::string> outs = {g_.fresh("SkipSimplifiedLayerNormalization")};
    if (want_sum) {
      outs.emplace_back("");
      outs.emplace_back("");
      outs.push_back(g_.fresh("residual"));
    }
    auto& n = g_.node("SkipSimplifiedLayerNormalization", {h, branch, gamma}, outs, kMs);
    OnnxGraphBuilder::set_attr(n, "epsilon", eps);
    if (want_sum) h = outs[3];
    return outs[0];
  }

  OnnxLinearWeight weight(int64_t layer, arch::Role role) { return rd_.linear(layer, role); }

  std::string project(const std::string& x, int64_t layer, arch::Role role) {
    return g_.emit_linear(x, weight(layer, role));
  }

  // Several projections of the same input: one MatMul on the rows stacked when all are dense
  // (biases stacked alike), then Split on the last axis; each through emit_linear otherwise.
  std::vector<std::string> project_packed(const std::string& x, int64_t layer, const std::vector<arch::Role>& roles,
                                          const std::string& packed_name) {
    std::vector<OnnxLinearWeight> ws;
    bool dense = true, biased = false;
    for (arch::Role r : roles) {
      ws.push_back(weight(layer, r));
      dense = dense && ws.back().kind == "dense";
      biased = biased || !ws.back().bias.empty();
    }
    std::vector<std::string> outs;
    if (!dense) {
      for (const auto& w : ws) outs.push_back(g_.emit_linear(x, w));
      return outs;
    }
    OnnxLinearWeight p;
    p.path = packed_name;
    p.in = ws[0].in;
    std::vector<int64_t> sizes;
    for (auto& w : ws) {
      p.out += w.out;
      sizes.push_back(w.out);
      p.dense.insert(p.dense.end(), w.dense.begin(), w.dense.end());
      if (biased) {
        if (w.bias.empty()) w.bias.assign(static_cast<size_t>(w.out), 0.0f);
        p.bias.insert(p.bias.end(), w.bias.begin(), w.bias.end());
      }
      std::vector<float>().swap(w.dense);
    }
    const std::string y = g_.emit_linear(x, p);
    for (size_t i = 0; i < ws.size(); ++i) outs.push_back(g_.fresh("Split"));
    auto& n = g_.node("Split", {y, g_.const_i64(sizes)}, outs);
    OnnxGraphBuilder::set_attr(n, "axis", int64_t{-1});
    return outs;
  }

  void project_qkv(const std::string& x, int64_t l, std::string& q, std::string& k, std::string& v) {
    auto o = project_packed(x, l, {arch::Role::AttnQ, arch::Role::AttnK, arch::Role::AttnV},
                            fmt::format("model.layers.{}.self_attn.qkv_proj", l));
    q = o[0], k = o[1], v = o[2];
  }

  void project_pair(const std::string& x, int64_t l, arch::Role a, arch::Role b, std::string& ya, std::string& yb) {
    auto o = project_packed(x, l, {a, b}, fmt::format("model.layers.{}.mlp.gate_up_proj", l));
    ya = o[0], yb = o[1];
  }

  // cos/sin caches [max_position_embeddings, hd/2]: angle = float32(position · inv_freq[i]) as HF
  // computes it in float32 (Llama-3 scaling is in inv_freq), cos/sin in double rounded to float.
  void build_rope_caches() {
    const int64_t half = c_.head_dim / 2, P = c_.max_position_embeddings;
    const std::vector<float> inv = rd_.inv_freq();
    std::vector<float> cs(static_cast<size_t>(P * half)), sn(cs.size());
    for (int64_t p = 0; p < P; ++p)
      for (int64_t i = 0; i < half; ++i) {
        const float angle = static_cast<float>(p) * inv[i];
        cs[p * half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
        sn[p * half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
      }
    cos_ = g_.float_initializer("cos_cache", {P, half}, cs.data());
    sin_ = g_.float_initializer("sin_cache", {P, half}, sn.data());
  }

  // GroupQueryAttention's lengths: seqlens_k[b] = Σ attention_mask[b] - 1 (int32 [b]) and
  // total_sequence_length = attention_mask's width (int32 scalar).
  void build_attention_lengths() {
    auto& rs = g_.node("ReduceSum", {"attention_mask", g_.const_i64({1})});
    OnnxGraphBuilder::set_attr(rs, "keepdims", int64_t{0});
    seqlens_k_ = g_.cast(g_.op("Sub", {rs.output(0), g_.const_i64({1}, true)}), TensorProto::INT32);
    const std::string width = g_.op("Gather", {g_.op("Shape", {"attention_mask"}), g_.const_i64({1}, true)});
    total_len_ = g_.cast(width, TensorProto::INT32);
  }

  // RotaryEmbedding on [b, s, n·hd] (interleaved 0: HF's rotate-half layout).
  std::string rope(const std::string& x) {
    auto& n = g_.node("RotaryEmbedding", {x, "position_ids", cos_, sin_}, {}, kMs);
    // num_heads / rotary_embedding_dim stay 0 (full rotation): the kernel takes the head size
    // from the caches (2 · their width) and the head count from the hidden size.
    OnnxGraphBuilder::set_attr(n, "interleaved", int64_t{0});
    return n.output(0);
  }

  OnnxSourceReader rd_;
  const ModelConfig& c_;
  OnnxExportOptions o_;
  OnnxGraphBuilder g_;
  std::string cos_, sin_, seqlens_k_, total_len_;
};

}  // namespace

void validate_onnx_optimized_options(const OnnxExportOptions& o, const ModelConfig& cfg) {
  (void)cfg;
  LLMOPT_CHECK_INPUT(o.dtype == DType::F32,
                     "[onnx] optimize: true writes float32 graphs only (ONNX Runtime's CPU GroupQueryAttention "
                     "kernel is float32); use dtype f32 with optimize, or optimize: false for an f16 graph");
}

void build_onnx_optimized_decoder(const OnnxModelSource& src, const OnnxExportOptions& o, onnx::ModelProto& m) {
  validate_onnx_optimized_options(o, src.config);
  OptimizedDecoder b(src, o, m);
  b.build();
}

void register_ort_onnx_domain_schemas() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (onnx::OpSchemaRegistry::Schema("SimplifiedLayerNormalization", 1, "") != nullptr) return;
    // As ONNX Runtime defines it (contrib op in the ai.onnx domain, since version 1): RMSNorm of X
    // over the axes from `axis` on, times `scale`; stash_type 1 computes in float32.
    onnx::OpSchema s;
    s.SetName("SimplifiedLayerNormalization")
        .SetDomain("")
        .SinceVersion(1)
        .SetDoc("ONNX Runtime's RMS normalization: Y = X / sqrt(mean(X^2) + epsilon) * scale (registered by llmopt "
                "for the checker)")
        .Attr("axis", "first normalization dimension", onnx::AttributeProto::INT, static_cast<int64_t>(-1))
        .Attr("epsilon", "added to the mean square", onnx::AttributeProto::FLOAT, 1e-5f)
        .Attr("stash_type", "type used for the statistics", onnx::AttributeProto::INT, static_cast<int64_t>(1))
        .Input(0, "X", "input", "T")
        .Input(1, "scale", "per-channel scale", "V")
        .Output(0, "Y", "output", "V")
        .Output(1, "inv_std_var", "saved inverse standard deviation", "U", onnx::OpSchema::Optional)
        .TypeConstraint("T", {"tensor(float16)", "tensor(float)", "tensor(double)", "tensor(bfloat16)"}, "input")
        .TypeConstraint("U", {"tensor(float)", "tensor(double)"}, "statistics")
        .TypeConstraint("V", {"tensor(float16)", "tensor(float)", "tensor(double)", "tensor(bfloat16)"}, "output")
        .SetLocation(__FILE__, __LINE__);
    onnx::RegisterSchema(s);
  });
}

nlohmann::json onnx_genai_config(const ModelConfig& cfg, const std::string& model_file) {
  using nlohmann::json;
  json inputs = {{"input_ids", "input_ids"},
                 {"attention_mask", "attention_mask"},
                 {"position_ids", "position_ids"},
                 {"past_key_names", "past_key_values.%d.key"},
                 {"past_value_names", "past_key_values.%d.value"}};
  json outputs = {{"logits", "logits"},
                  {"present_key_names", "present.%d.key"},
                  {"present_value_names", "present.%d.value"}};
  json decoder = {{"session_options", {{"log_id", "onnxruntime-genai"}, {"provider_options", json::array()}}},
                  {"filename", model_file},
                  {"head_size", cfg.head_dim},
                  {"hidden_size", cfg.hidden_size},
                  {"inputs", inputs},
                  {"outputs", outputs},
                  {"num_attention_heads", cfg.num_attention_heads},
                  {"num_hidden_layers", cfg.num_hidden_layers},
                  {"num_key_value_heads", cfg.num_key_value_heads}};
  // onnxruntime-genai masks every prompt token equal to pad_token_id as padding: eos as the HF
  // builder does, but none (-1) where eos is also bos (GPT-2 style vocabularies), else the BOS that
  // starts every prompt would be masked out.
  const int64_t pad = cfg.eos_token_id != cfg.bos_token_id ? cfg.eos_token_id : -1;
  json model = {{"bos_token_id", cfg.bos_token_id},
                {"context_length", cfg.max_position_embeddings},
                {"decoder", decoder},
                {"eos_token_id", cfg.eos_token_id},
                {"pad_token_id", pad},
                {"type", "llama"},
                {"vocab_size", cfg.vocab_size}};
  // Greedy decoding by default; GroupQueryAttention lets past and present share one buffer.
  json search = {{"diversity_penalty", 0.0},  {"do_sample", false},
                 {"early_stopping", true},    {"length_penalty", 1.0},
                 {"max_length", cfg.max_position_embeddings},
                 {"min_length", 0},           {"no_repeat_ngram_size", 0},
                 {"num_beams", 1},            {"num_return_sequences", 1},
                 {"past_present_share_buffer", true},
                 {"repetition_penalty", 1.0}, {"temperature", 1.0},
                 {"top_k", 1},                {"top_p", 1.0}};
  return json{{"model", model}, {"search", search}};
}

}  // namespace llmopt::io
