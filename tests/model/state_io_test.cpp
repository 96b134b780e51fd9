// A model leaves every step exactly as it was stored: a made-up packed layer kind (Q8_0 blocks +
// a U8 side tensor) survives the state checkpoint (save -> load), in-memory clones and the GGUF
// export (write -> load) bit-identically, and the state loader rejects bad input with InputError.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "../common/packed_test_layer.h"
#include "core/error.h"
#include "io/architecture.h"
#include "io/checkpoint.h"
#include "io/gguf_checkpoint.h"
#include "model/loader.h"
#include "model/state_io.h"
#include "model/synth.h"

namespace llmopt {
namespace {
namespace fs = std::filesystem;
using testing::PackedTestLinear;

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    path = fs::temp_directory_path() / ("llmopt-state-" + name + "-" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

ModelConfig packable_config() {
  ModelConfig c;
  c.hidden_size = 64;  // rows of q/k/v/gate/up/lm_head are whole Q8_0 blocks
  c.intermediate_size = 96;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 70;
  c.tie_word_embeddings = false;
  return c;
}

const char* kPacked[] = {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.k_proj",
                         "model.layers.1.mlp.up_proj", "lm_head"};

std::shared_ptr<model::LlamaModel> packed_model() {
  PackedTestLinear::register_kind();
  auto m = model::synth_model(packable_config(), 17);
  std::map<std::string, std::shared_ptr<model::LinearLayer>> ls;
  for (auto& [n, l] : m->linear_layers()) ls[n] = l;
  for (const char* p : kPacked) m->set_linear(p, std::make_shared<PackedTestLinear>(ls.at(p)->dense_weight()));
  return m;
}

std::map<std::string, std::shared_ptr<model::LinearLayer>> layers_of(model::LlamaModel& m) {
  std::map<std::string, std::shared_ptr<model::LinearLayer>> out;
  for (auto& [n, l] : m.linear_layers()) out[n] = l;
  return out;
}

// Every layer of `b` is stored exactly as in `a`: same kind, same tensor names, dtypes, shapes
// and bytes; every plain parameter bit-identical.
void expect_same_storage(model::LlamaModel& a, model::LlamaModel& b) {
  auto la = layers_of(a), lb = layers_of(b);
  ASSERT_EQ(la.size(), lb.size());
  for (auto& [name, l] : la) {
    const model::LayerState sa = l->stored_state(), sb = lb.at(name)->stored_state();
    EXPECT_EQ(sa.kind, sb.kind) << name;
    EXPECT_EQ(sa.meta, sb.meta) << name;
    ASSERT_EQ(sa.tensors.size(), sb.tensors.size()) << name;
    for (size_t i = 0; i < sa.tensors.size(); ++i) {
      const auto &x = sa.tensors[i], &y = sb.tensors[i];
      EXPECT_EQ(x.name, y.name) << name;
      EXPECT_EQ(x.dtype, y.dtype) << name << "." << x.name;
      EXPECT_EQ(x.shape, y.shape) << name << "." << x.name;
      ASSERT_EQ(x.nbytes, y.nbytes) << name << "." << x.name;
      EXPECT_EQ(std::memcmp(x.data, y.data, static_cast<size_t>(x.nbytes)), 0) << name << "." << x.name;
    }
  }
  std::map<std::string, torch::Tensor> pa;
  for (auto& p : a.named_parameters()) pa[p.key()] = p.value();
  for (auto& p : b.named_parameters())
    if (pa.count(p.key())) EXPECT_TRUE(torch::equal(pa.at(p.key()), p.value())) << p.key();
}

TEST(StateIo, PackedLayersSurviveSaveAndLoadBitIdentically) {
  TempDir dir("roundtrip");
  auto m = packed_model();
  model::save_model_state(*m, (dir.path / "s").string());
  ASSERT_TRUE(model::is_model_state_dir((dir.path / "s").string()));
  auto back = model::load_model_state((dir.path / "s").string());
  for (const char* p : kPacked) EXPECT_EQ(layers_of(*back).at(p)->kind(), "test_q8") << p;
  EXPECT_EQ(layers_of(*back).at("model.layers.0.mlp.down_proj")->kind(), "dense");
  expect_same_storage(*m, *back);
  // Same stored bytes -> the same function, exactly.
  torch::NoGradGuard ng;
  auto ids = torch::tensor({{1, 5, 9, 33, 2, 69}}, torch::kLong);
  EXPECT_TRUE(torch::equal(m->forward(ids), back->forward(ids)));
  // A second save of the restored model writes the same bytes.
  model::save_model_state(*back, (dir.path / "s2").string());
  for (const char* f : {"state.safetensors", "llmopt_state.json", "config.json"}) {
    std::ifstream a(dir.path / "s" / f, std::ios::binary), b(dir.path / "s2" / f, std::ios::binary);
    const std::string sa((std::istreambuf_iterator<char>(a)), {}), sb((std::istreambuf_iterator<char>(b)), {});
    EXPECT_EQ(sa, sb) << f;
  }
}

TEST(StateIo, CloneKeepsStorage) {
  auto m = packed_model();
  auto c = model::clone_model(*m);
  expect_same_storage(*m, *c);
  // A deep copy: changing the clone leaves the original alone.
  torch::NoGradGuard ng;
  c->final_norm().mul_(2);
  EXPECT_FALSE(torch::equal(c->final_norm(), m->final_norm()));
}

TEST(StateIo, GgufExportWritesPackedBlocksAsStored) {
  TempDir dir("gguf");
  auto m = packed_model();
  const std::string path = (dir.path / "m.gguf").string();
  for (DType out : {DType::F32, DType::F16}) {
    io::write_gguf(path, model::model_to_checkpoint(*m, model::CheckpointWeights::AsStored), out);
    const io::Checkpoint back = io::load_checkpoint(path);
    auto ls = layers_of(*m);
    for (const char* p : kPacked) {
      const auto& packed = static_cast<const PackedTestLinear&>(*ls.at(p));
      const io::TensorView& t = back.get(std::string(p) + ".weight");
      EXPECT_EQ(t.dtype, DType::Q8_0) << p;
      ASSERT_EQ(t.nbytes, static_cast<int64_t>(packed.blocks().size())) << p;
      // The loader undoes the writer's q/k row permutation: the blocks come back as placed.
      EXPECT_EQ(std::memcmp(t.data, packed.blocks().data(), packed.blocks().size()), 0) << p;
    }
    const io::TensorView& dense = back.get("model.layers.0.mlp.down_proj.weight");
    EXPECT_EQ(dense.dtype, out);
  }
}

TEST(StateIo, BadStateIsInputError) {
  TempDir dir("bad");
  auto m = packed_model();
  const fs::path s = dir.path / "s";
  model::save_model_state(*m, s.string());
  // Unknown kind: named, with the registered kinds listed.
  {
    std::ifstream in(s / "llmopt_state.json");
    std::string text((std::istreambuf_iterator<char>(in)), {});
    const auto at = text.find("\"test_q8\"");
    ASSERT_NE(at, std::string::npos);
    text.replace(at, 9, "\"nope_q8\"");
    std::ofstream(s / "llmopt_state.json") << text;
    try {
      model::load_model_state(s.string());
      FAIL() << "expected InputError";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("unknown layer kind 'nope_q8'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("dense"), std::string::npos) << e.what();
    }
  }
  // Truncated tensor file.
  model::save_model_state(*m, s.string());
  fs::resize_file(s / "state.safetensors", fs::file_size(s / "state.safetensors") / 2);
  EXPECT_THROW(model::load_model_state(s.string()), InputError);
  // Not a state directory.
  EXPECT_THROW(model::load_model_state((dir.path / "none").string()), InputError);
}

TEST(StateIo, ReplacingALayerChecksShapeAndName) {
  auto m = packed_model();
  auto other = std::make_shared<model::DenseLinear>(3, 64, false);
  EXPECT_THROW(m->set_linear("model.layers.0.self_attn.q_proj", other), InputError);
  EXPECT_THROW(m->set_linear("model.layers.9.self_attn.q_proj", other), InputError);
  EXPECT_THROW(m->set_linear("model.layers.0.self_attn.x_proj", other), InputError);
}

}  // namespace
}  // namespace llmopt
