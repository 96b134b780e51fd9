// ONNX writer: graph structure, input/output names and dynamic axes, the libonnx checker at the
// opsets it knows, external data, and the exit-2 cases. Numerics are checked in ONNX Runtime by
// tests/peer/test_onnx.py (no C++ ONNX Runtime here).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "core/error.h"
#include "io_test_util.h"
#include "io/onnx_graph.h"

#include <onnx/onnx_pb.h>

namespace llmopt::io {
namespace {

ModelConfig tiny_config(bool tied, bool bias) {
  ModelConfig c;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.vocab_size = 32;
  c.tie_word_embeddings = tied;
  c.attention_bias = bias;
  return c;
}

// Random weights of the shapes the architecture description gives.
OnnxModelSource tiny_source(const ModelConfig& c, const std::string& kind = "dense") {
  OnnxModelSource s;
  s.config = c;
  s.tensor = [c](const std::string& name) {
    std::vector<float> v;
    arch::for_each_tensor(c, [&](const arch::TensorInfo& t) {
      if (t.hf_name != name) return;
      int64_t n = 1;
      for (int64_t d : t.shape) n *= d;
      std::mt19937 rng(static_cast<uint32_t>(n));
      std::normal_distribution<float> nd(0.f, 0.1f);
      v.resize(n);
      for (auto& x : v) x = nd(rng);
    });
    return v;
  };
  s.linear = [kind](const arch::LinearInfo& li) {
    OnnxLinearWeight w;
    w.out = li.out;
    w.in = li.in;
    w.kind = kind;
    w.dense.assign(static_cast<size_t>(li.out * li.in), 0.01f);
    if (li.bias) w.bias.assign(static_cast<size_t>(li.out), 0.5f);
    return w;
  };
  return s;
}

std::set<std::string> names(const google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>& v) {
  std::set<std::string> out;
  for (const auto& x : v) out.insert(x.name());
  return out;
}

std::vector<std::string> dims(const onnx::ValueInfoProto& v) {
  std::vector<std::string> out;
  for (const auto& d : v.type().tensor_type().shape().dim())
    out.push_back(d.has_dim_param() ? d.dim_param() : std::to_string(d.dim_value()));
  return out;
}

const onnx::ValueInfoProto& find(const google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>& v,
                                 const std::string& name) {
  for (const auto& x : v)
    if (x.name() == name) return x;
  throw std::runtime_error("no " + name);
}

int count_op(const onnx::ModelProto& m, const std::string& op) {
  int n = 0;
  for (const auto& node : m.graph().node()) n += node.op_type() == op;
  return n;
}

TEST(OnnxGraph, KvVariantNamesAndDynamicAxes) {
  const ModelConfig c = tiny_config(false, true);
  OnnxExportOptions o;
  const onnx::ModelProto m = build_onnx_model(tiny_source(c), o);
  const auto in = names(m.graph().input());
  const auto out = names(m.graph().output());
  EXPECT_EQ(in, (std::set<std::string>{"input_ids", "attention_mask", "position_ids", "past_key_values.0.key",
                                       "past_key_values.0.value", "past_key_values.1.key", "past_key_values.1.value"}));
  EXPECT_EQ(out, (std::set<std::string>{"logits", "present.0.key", "present.0.value", "present.1.key",
                                        "present.1.value"}));
  EXPECT_EQ(dims(find(m.graph().input(), "input_ids")), (std::vector<std::string>{"batch_size", "sequence_length"}));
  EXPECT_EQ(dims(find(m.graph().input(), "attention_mask")),
            (std::vector<std::string>{"batch_size", "total_sequence_length"}));
  EXPECT_EQ(dims(find(m.graph().input(), "past_key_values.1.value")),
            (std::vector<std::string>{"batch_size", "2", "past_sequence_length", "4"}));
  EXPECT_EQ(dims(find(m.graph().output(), "present.0.key")),
            (std::vector<std::string>{"batch_size", "2", "total_sequence_length", "4"}));
  EXPECT_EQ(dims(find(m.graph().output(), "logits")),
            (std::vector<std::string>{"batch_size", "sequence_length", "32"}));
  // 7 projections per layer + lm_head, each one MatMul; 2 attention MatMuls per layer.
  EXPECT_EQ(count_op(m, "MatMul"), 2 * 7 + 1 + 2 * 2);
  std::set<std::string> inits;
  for (const auto& t : m.graph().initializer()) inits.insert(t.name());
  EXPECT_TRUE(inits.count("model.layers.1.self_attn.k_proj.bias"));
  EXPECT_TRUE(inits.count("model.layers.0.mlp.down_proj.weight.T"));
  EXPECT_TRUE(inits.count("lm_head.weight.T"));
  EXPECT_TRUE(inits.count("rope.inv_freq"));
  EXPECT_NE(check_onnx_model(m).find("passed"), std::string::npos);
}

TEST(OnnxGraph, NoCacheVariantHasNoPast) {
  const ModelConfig c = tiny_config(true, false);
  OnnxExportOptions o;
  o.variant = OnnxVariant::NoCache;
  const onnx::ModelProto m = build_onnx_model(tiny_source(c), o);
  EXPECT_EQ(names(m.graph().input()), (std::set<std::string>{"input_ids", "attention_mask", "position_ids"}));
  EXPECT_EQ(names(m.graph().output()), (std::set<std::string>{"logits"}));
  EXPECT_EQ(dims(find(m.graph().input(), "attention_mask")), (std::vector<std::string>{"batch_size", "sequence_length"}));
  // Tied: the embedding is the only vocab-sized initializer, transposed in the graph.
  for (const auto& t : m.graph().initializer()) EXPECT_NE(t.name(), "lm_head.weight.T");
  EXPECT_EQ(count_op(m, "Gather") >= 1, true);
  EXPECT_NE(check_onnx_model(m).find("passed"), std::string::npos);
}

TEST(OnnxGraph, EveryOpsetBuildsAndPassesTheChecker) {
  const ModelConfig c = tiny_config(false, true);
  for (int64_t opset = kOnnxMinOpset; opset <= kOnnxMaxOpset; ++opset) {
    for (DType dt : {DType::F32, DType::F16}) {
      OnnxExportOptions o;
      o.opset = opset;
      o.dtype = dt;
      const onnx::ModelProto m = build_onnx_model(tiny_source(c), o);
      EXPECT_EQ(m.opset_import(0).version(), opset);
      // ReduceMean takes its axes as an input from opset 18 on, as an attribute before.
      for (const auto& n : m.graph().node())
        if (n.op_type() == "ReduceMean") {
          EXPECT_EQ(n.input_size(), opset >= 18 ? 2 : 1) << opset;
        }
      const std::string note = check_onnx_model(m);
      // libonnx 1.12 knows opsets up to 17; later ones are checked as their opset-17 equivalent.
      EXPECT_NE(note.find("passed"), std::string::npos) << opset << ": " << note;
      EXPECT_EQ(note.find("opset-17 equivalent") != std::string::npos, opset > kOnnxCheckerMaxOpset) << note;
    }
  }
}

TEST(OnnxGraph, CheckerRejectsABrokenGraph) {
  const ModelConfig c = tiny_config(false, false);
  for (int64_t opset : {17, 21}) {
    OnnxExportOptions o;
    o.opset = opset;
    onnx::ModelProto m = build_onnx_model(tiny_source(c), o);
    // A node reading a value nothing produces.
    m.mutable_graph()->mutable_node(3)->set_input(0, "no_such_value");
    EXPECT_THROW(check_onnx_model(m), RunError) << opset;
  }
}

TEST(OnnxGraph, BadOptionsAreInputErrorsNamingTheOption) {
  const ModelConfig c = tiny_config(false, false);
  for (int64_t opset : {13, 22}) {
    OnnxExportOptions o;
    o.opset = opset;
    try {
      build_onnx_model(tiny_source(c), o);
      FAIL() << "opset " << opset << " accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("opset"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("14..21"), std::string::npos) << e.what();
    }
  }
  OnnxExportOptions o;
  o.dtype = DType::BF16;
  EXPECT_THROW(build_onnx_model(tiny_source(c), o), InputError);
}

TEST(OnnxGraph, PackedKindsGoThroughTheRegistryOrFallBackToDense) {
  const ModelConfig c = tiny_config(false, false);
  OnnxExportOptions o;
  o.require_packed = true;
  try {
    build_onnx_model(tiny_source(c, "test_packed_kind"), o);
    FAIL() << "unmapped packed kind accepted with require_packed";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("test_packed_kind"), std::string::npos) << e.what();
  }
  o.require_packed = false;
  const onnx::ModelProto dense = build_onnx_model(tiny_source(c, "test_packed_kind"), o);
  EXPECT_EQ(count_op(dense, "MatMul"), 2 * 7 + 1 + 2 * 2);

  int calls = 0;
  register_onnx_linear_kind("test_packed_kind2", [&](OnnxGraphBuilder& g, const std::string& x,
                                                     const OnnxLinearWeight& w) {
    ++calls;
    std::vector<float> wt(static_cast<size_t>(w.in * w.out), 0.f);
    return g.op("MatMul", {x, g.float_initializer(w.path + ".packed", {w.in, w.out}, wt.data())});
  });
  EXPECT_TRUE(onnx_linear_kind_registered("test_packed_kind2"));
  o.require_packed = true;
  const onnx::ModelProto packed = build_onnx_model(tiny_source(c, "test_packed_kind2"), o);
  EXPECT_EQ(calls, 2 * 7 + 1);
  EXPECT_NE(check_onnx_model(packed).find("passed"), std::string::npos);
}

TEST(OnnxGraph, ExternalDataAboveTheThreshold) {
  testing::TempDir dir("onnx_external");
  const ModelConfig c = tiny_config(false, false);
  OnnxExportOptions o;
  onnx::ModelProto m = build_onnx_model(tiny_source(c), o);
  const std::string path = dir.file("model.onnx");
  const auto files = write_onnx_model(m, path, /*external_data_threshold=*/0);
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[1], path + ".data");
  onnx::ModelProto back;
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(back.ParseFromIstream(&in));
  int external = 0;
  for (const auto& t : back.graph().initializer()) {
    if (t.data_location() != onnx::TensorProto::EXTERNAL) continue;
    ++external;
    EXPECT_EQ(t.external_data(0).value(), "model.onnx.data");
    EXPECT_EQ(std::stoll(t.external_data(1).value()) % 4096, 0);
  }
  EXPECT_GT(external, 0);
  EXPECT_GT(std::filesystem::file_size(path + ".data"), 0u);

  // Under the threshold: one file, all inline.
  onnx::ModelProto m2 = build_onnx_model(tiny_source(c), o);
  const auto files2 = write_onnx_model(m2, dir.file("inline.onnx"), int64_t{1} << 40);
  EXPECT_EQ(files2.size(), 1u);
  EXPECT_FALSE(std::filesystem::exists(dir.file("inline.onnx.data")));
  // Written inline over the external export: the stale data file goes.
  onnx::ModelProto m3 = build_onnx_model(tiny_source(c), o);
  write_onnx_model(m3, path, int64_t{1} << 40);
  EXPECT_FALSE(std::filesystem::exists(path + ".data"));
  // No temporary files are left behind.
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

}  // namespace
}  // namespace llmopt::io
