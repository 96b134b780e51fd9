// Optimized ONNX graph (io/onnx_optimized.h): which fused ops it is made of and their attributes,
// the packed projections' initializers against the source weights, the RoPE caches against
// direct double-precision math, the checker, genai_config.json and the exit-2 cases. Numerics
// in ONNX Runtime (and onnxruntime-genai) are checked by tests/peer/test_onnx_optimized.py.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>

#include "core/error.h"
#include "io/onnx_graph.h"
#include "io/onnx_optimized.h"

#include <onnx/onnx_pb.h>

namespace llmopt::io {
namespace {

ModelConfig tiny(bool tied, bool bias) {
  ModelConfig c;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.vocab_size = 32;
  c.max_position_embeddings = 64;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = tied;
  c.attention_bias = bias;
  return c;
}

// Weight value of projection `path` at (row r, column c): distinct per projection and element, so
// a packed matrix can be traced back to its sources.
float wval(const std::string& path, int64_t r, int64_t c) {
  float h = 0;
  for (char ch : path) h = std::fmod(h * 31.0f + static_cast<float>(ch), 97.0f);
  return h + 0.001f * static_cast<float>(r) + 0.0001f * static_cast<float>(c);
}

OnnxModelSource source(const ModelConfig& c, const std::string& kind = "dense") {
  OnnxModelSource s;
  s.config = c;
  s.tensor = [c](const std::string& name) {
    std::vector<float> v;
    arch::for_each_tensor(c, [&](const arch::TensorInfo& t) {
      if (t.hf_name != name) return;
      int64_t n = 1;
      for (int64_t d : t.shape) n *= d;
      v.assign(static_cast<size_t>(n), 0.5f);
    });
    return v;
  };
  s.linear = [kind](const arch::LinearInfo& li) {
    OnnxLinearWeight w;
    w.out = li.out;
    w.in = li.in;
    w.kind = kind;
    w.dense.resize(static_cast<size_t>(li.out * li.in));
    for (int64_t r = 0; r < li.out; ++r)
      for (int64_t k = 0; k < li.in; ++k) w.dense[r * li.in + k] = wval(li.path, r, k);
    if (li.bias)
      for (int64_t r = 0; r < li.out; ++r) w.bias.push_back(wval(li.path + ".bias", r, 0));
    return w;
  };
  return s;
}

OnnxExportOptions optimized() {
  OnnxExportOptions o;
  o.optimize = true;
  return o;
}

std::map<std::string, int> op_counts(const onnx::ModelProto& m) {
  std::map<std::string, int> n;
  for (const auto& node : m.graph().node()) n[node.domain() + ":" + node.op_type()]++;
  return n;
}

const onnx::TensorProto& init(const onnx::ModelProto& m, const std::string& name) {
  for (const auto& t : m.graph().initializer())
    if (t.name() == name) return t;
  throw std::runtime_error("no initializer " + name);
}

std::vector<float> floats(const onnx::TensorProto& t) {
  std::vector<float> v(t.raw_data().size() / sizeof(float));
  std::memcpy(v.data(), t.raw_data().data(), v.size() * sizeof(float));
  return v;
}

const onnx::AttributeProto* attr(const onnx::NodeProto& n, const std::string& name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

TEST(OnnxOptimized, MadeOfTheFusedOpsWithTheSameNames) {
  const ModelConfig c = tiny(/*tied=*/true, /*bias=*/true);
  const onnx::ModelProto m = build_onnx_model(source(c), optimized());
  auto ops = op_counts(m);
  EXPECT_EQ(ops["com.microsoft:GroupQueryAttention"], 2);
  EXPECT_EQ(ops["com.microsoft:RotaryEmbedding"], 4);
  EXPECT_EQ(ops["com.microsoft:SkipSimplifiedLayerNormalization"], 4);  // 2 per layer - 1 + the final norm
  EXPECT_EQ(ops[":SimplifiedLayerNormalization"], 1);
  EXPECT_EQ(ops["com.microsoft:FusedMatMul"], 1);  // tied head
  EXPECT_EQ(ops[":Softmax"], 0);
  EXPECT_EQ(ops[":ReduceMean"], 0);
  // Per layer: packed q/k/v, o_proj, packed gate/up, down_proj.
  EXPECT_EQ(ops[":MatMul"], 2 * 4);
  EXPECT_EQ(ops[":Split"], 2 * 2);
  std::vector<std::string> in, out;
  for (const auto& v : m.graph().input()) in.push_back(v.name());
  for (const auto& v : m.graph().output()) out.push_back(v.name());
  EXPECT_EQ(in, (std::vector<std::string>{"input_ids", "attention_mask", "position_ids", "past_key_values.0.key",
                                          "past_key_values.0.value", "past_key_values.1.key",
                                          "past_key_values.1.value"}));
  EXPECT_EQ(out, (std::vector<std::string>{"logits", "present.0.key", "present.0.value", "present.1.key",
                                           "present.1.value"}));
  for (const auto& n : m.graph().node()) {
    if (n.op_type() == "GroupQueryAttention") {
      EXPECT_EQ(attr(n, "num_heads")->i(), 4);
      EXPECT_EQ(attr(n, "kv_num_heads")->i(), 2);
      EXPECT_FLOAT_EQ(attr(n, "scale")->f(), 0.5f);  // 1/sqrt(4)
      EXPECT_EQ(attr(n, "local_window_size"), nullptr);
      ASSERT_EQ(n.input_size(), 7);
      EXPECT_EQ(n.input(3).rfind("past_key_values.", 0), 0u);
      EXPECT_EQ(n.output(1).rfind("present.", 0), 0u);
    }
    if (n.op_type() == "RotaryEmbedding") {
      EXPECT_EQ(attr(n, "interleaved")->i(), 0);
      EXPECT_EQ(n.input(1), "position_ids");
    }
  }
  bool ms = false;
  for (const auto& imp : m.opset_import()) ms = ms || imp.domain() == "com.microsoft";
  EXPECT_TRUE(ms);
  // The checker passes (SimplifiedLayerNormalization's schema registered for it).
  EXPECT_NE(check_onnx_model(m).find("checker passed"), std::string::npos);
}

TEST(OnnxOptimized, PackedProjectionsHoldTheSourceRowsAndBiases) {
  const ModelConfig c = tiny(false, true);
  const onnx::ModelProto m = build_onnx_model(source(c), optimized());
  const auto& t = init(m, "model.layers.1.self_attn.qkv_proj.weight.T");
  const int64_t q = 16, kv = 8, in = 16, out = q + 2 * kv;
  ASSERT_EQ(t.dims_size(), 2);
  EXPECT_EQ(t.dims(0), in);
  EXPECT_EQ(t.dims(1), out);
  const std::vector<float> w = floats(t);
  for (int64_t col = 0; col < out; ++col) {
    const std::string path = col < q ? "model.layers.1.self_attn.q_proj"
                             : col < q + kv ? "model.layers.1.self_attn.k_proj"
                                            : "model.layers.1.self_attn.v_proj";
    const int64_t r = col < q ? col : col < q + kv ? col - q : col - q - kv;
    for (int64_t k = 0; k < in; ++k) ASSERT_EQ(w[k * out + col], wval(path, r, k)) << col << "," << k;
  }
  const std::vector<float> b = floats(init(m, "model.layers.1.self_attn.qkv_proj.bias"));
  ASSERT_EQ(b.size(), static_cast<size_t>(out));
  EXPECT_EQ(b[0], wval("model.layers.1.self_attn.q_proj.bias", 0, 0));
  EXPECT_EQ(b[q + 3], wval("model.layers.1.self_attn.k_proj.bias", 3, 0));
  EXPECT_EQ(b[q + kv + 7], wval("model.layers.1.self_attn.v_proj.bias", 7, 0));
  const auto& gu = init(m, "model.layers.0.mlp.gate_up_proj.weight.T");
  EXPECT_EQ(gu.dims(1), 2 * 24);
  // Untied: the head is a projection of its own.
  EXPECT_NO_THROW(init(m, "lm_head.weight.T"));
}

TEST(OnnxOptimized, NonDenseKindsAreNotPacked) {
  // An unregistered kind falls back to its dense weight, one MatMul per projection, no Split.
  const ModelConfig c = tiny(true, false);
  const onnx::ModelProto m = build_onnx_model(source(c, "not_a_kind"), optimized());
  auto ops = op_counts(m);
  EXPECT_EQ(ops[":MatMul"], 2 * 7);
  EXPECT_EQ(ops[":Split"], 0);
}

// cos/sin caches [max_positions, hd/2] against cos(p · theta^(-2i/hd)) in double. HF's float32
// path rounds inv_freq and the product p·inv_freq to float32 (relative 2^-24 each), so the angle
// is off by at most |angle|·2^-23 (plus the double pow's ~1e-16), and the stored cos/sin by that
// plus their own float rounding 2^-24.
TEST(OnnxOptimized, RopeCachesMatchDirectMath) {
  const ModelConfig c = tiny(true, false);
  const onnx::ModelProto m = build_onnx_model(source(c), optimized());
  const auto& ct = init(m, "cos_cache");
  ASSERT_EQ(ct.dims(0), 64);
  ASSERT_EQ(ct.dims(1), 2);
  const std::vector<float> cs = floats(ct), sn = floats(init(m, "sin_cache"));
  for (int64_t p = 0; p < 64; ++p)
    for (int64_t i = 0; i < 2; ++i) {
      const double angle = static_cast<double>(p) * std::pow(10000.0, -2.0 * static_cast<double>(i) / 4.0);
      const double tol = std::abs(angle) * std::ldexp(1.0, -23) + std::ldexp(1.0, -24) + 1e-15;
      EXPECT_NEAR(cs[p * 2 + i], std::cos(angle), tol) << p << "," << i;
      EXPECT_NEAR(sn[p * 2 + i], std::sin(angle), tol) << p << "," << i;
    }
}

TEST(OnnxOptimized, SlidingWindowAndNoCacheVariant) {
  ModelConfig c = tiny(true, false);
  c.sliding_window = 8;
  OnnxExportOptions o = optimized();
  o.variant = OnnxVariant::NoCache;
  const onnx::ModelProto m = build_onnx_model(source(c), o);
  EXPECT_EQ(m.graph().input_size(), 3);
  EXPECT_EQ(m.graph().output_size(), 1);
  int gqa = 0;
  for (const auto& n : m.graph().node())
    if (n.op_type() == "GroupQueryAttention") {
      ++gqa;
      EXPECT_EQ(attr(n, "local_window_size")->i(), 7);  // keys i-7..i: a window of 8
      EXPECT_EQ(n.input(3), "");
    }
  EXPECT_EQ(gqa, 2);
}

TEST(OnnxOptimized, F16IsAnInputErrorNamingTheWayOut) {
  OnnxExportOptions o = optimized();
  o.dtype = DType::F16;
  try {
    build_onnx_model(source(tiny(true, false)), o);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("optimize: false"), std::string::npos) << e.what();
  }
}

TEST(OnnxOptimized, GenaiConfig) {
  ModelConfig c = tiny(true, false);
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  auto g = onnx_genai_config(c, "model.onnx");
  EXPECT_EQ(g["model"]["type"], "llama");
  EXPECT_EQ(g["model"]["context_length"], 64);
  EXPECT_EQ(g["model"]["pad_token_id"], 2);
  const auto& d = g["model"]["decoder"];
  EXPECT_EQ(d["filename"], "model.onnx");
  EXPECT_EQ(d["head_size"], 4);
  EXPECT_EQ(d["num_key_value_heads"], 2);
  EXPECT_EQ(d["inputs"]["past_key_names"], "past_key_values.%d.key");
  EXPECT_EQ(d["outputs"]["present_value_names"], "present.%d.value");
  EXPECT_EQ(g["search"]["top_k"], 1);
  // eos == bos: no pad id, else genai would mask the BOS that starts every prompt.
  c.eos_token_id = 1;
  EXPECT_EQ(onnx_genai_config(c, "model.onnx")["model"]["pad_token_id"], -1);
}

}  // namespace
}  // namespace llmopt::io
