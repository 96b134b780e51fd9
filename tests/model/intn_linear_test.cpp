// IntNLinear and NF4Linear (model/intn_linear.h, model/nf4_linear.h): forward (GEMV for ≤ 8 rows,
// dequantized tiles + matmul above) against a float64 matmul on dense_weight() over odd shapes at
// 1 and 2 threads; compact storage; from_codes rebuilds the same storage as quantize; stored_state
// survives make_linear, a state checkpoint and a clone bit-identically; bad parameters are
// InputError.
//
// Tolerance (dot_bound): dense_weight() holds the exact decoded values (int-N: s·(q − z) is
// exact in f32; NF4: fl(v·absmax)), and both paths round a term of the exact product at most
// k + groups + 11 times (kernel: see tests/kernels/intn_test.cpp; tile path: BLAS sums of k
// products and the bias), so |y − y64| ≤ (k + groups + 11)·u·(|bias| + Σ|w·x|), u = 2^-24.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/threads.h"
#include "model/intn_linear.h"
#include "model/loader.h"
#include "model/save.h"
#include "model/nf4_linear.h"
#include "model/state_io.h"
#include "model/synth.h"

namespace llmopt {
namespace {
namespace fs = std::filesystem;

void expect_forward_matches_dense(model::LinearLayer& l, int64_t groups, const std::string& what) {
  torch::NoGradGuard ng;
  const torch::Tensor w = l.dense_weight().to(torch::kFloat64);
  const torch::Tensor b = l.bias().defined() ? l.bias().to(torch::kFloat64) : torch::zeros({l.out_features()}, torch::kFloat64);
  const int64_t k = l.in_features();
  for (int threads : {1, 2}) {
    set_threads(threads);
    for (int64_t m : {1, 5, 20}) {  // 1 and 5: GEMV; 20: tiles
      const torch::Tensor x = torch::randn({m, k});
      const torch::Tensor y = l.forward(x).to(torch::kFloat64);
      const torch::Tensor x64 = x.to(torch::kFloat64);
      const torch::Tensor want = torch::matmul(x64, w.t()) + b;
      const torch::Tensor bound =
          (torch::matmul(x64.abs(), w.abs().t()) + b.abs()) * (1.01 * static_cast<double>(k + groups + 11) * 0x1p-24);
      EXPECT_TRUE(((y - want).abs() <= bound).all().item<bool>())
          << what << " m=" << m << " threads=" << threads << " max err " << (y - want).abs().max().item<double>();
    }
  }
  set_threads(default_threads());
}

TEST(IntNLinear, ForwardEqualsMatmulOnDequantizedWeight) {
  torch::manual_seed(1);
  for (int64_t in : {1, 33, 172, 4097}) {
    for (model::IntNParams p : {model::IntNParams{4, 128, true}, model::IntNParams{3, 32, false},
                                model::IntNParams{8, -1, true}, model::IntNParams{2, 64, false}}) {
      const int64_t out = 37;
      auto l = model::IntNLinear::quantize(torch::randn({out, in}) * 0.05, torch::randn({out}), p);
      expect_forward_matches_dense(*l, l->matrix().groups(),
                                   fmt::format("in={} bits={} group={} sym={}", in, p.bits, p.group_size, p.sym));
    }
  }
}

TEST(NF4Linear, ForwardEqualsMatmulOnDequantizedWeight) {
  torch::manual_seed(2);
  for (int64_t in : {1, 33, 172, 4097}) {
    for (bool dq : {false, true}) {
      auto l = model::NF4Linear::quantize(torch::randn({37, in}) * 0.05, torch::randn({37}), dq);
      expect_forward_matches_dense(*l, l->matrix().blocks_per_row(), fmt::format("in={} dq={}", in, dq));
    }
  }
}

TEST(IntNLinear, StorageIsCompact) {
  torch::manual_seed(3);
  auto w = torch::randn({64, 256});
  auto a = model::IntNLinear::quantize(w, {}, {4, 128, true});
  EXPECT_EQ(a->storage_bytes(), 64 * (128 + 2 * 2));  // 4-bit codes + 2 f16 scales per row
  EXPECT_DOUBLE_EQ(a->bits_per_weight(), 4.125);
  auto c = model::IntNLinear::quantize(w, {}, {8, -1, true});  // int8 per output channel
  EXPECT_EQ(c->storage_bytes(), 64 * (256 + 2));
  auto n = model::NF4Linear::quantize(w, {}, false);
  EXPECT_EQ(n->storage_bytes(), 64 * 128 + 64 * 4 * 4);
  EXPECT_DOUBLE_EQ(n->bits_per_weight(), 4.5);
  auto nd = model::NF4Linear::quantize(w, {}, true);
  EXPECT_LT(nd->bits_per_weight(), 4.2);
}

TEST(IntNLinear, FromCodesRebuildsQuantizedStorage) {
  torch::manual_seed(4);
  auto w = torch::randn({9, 172});
  for (bool sym : {true, false}) {
    model::IntNParams p{3, 64, sym};
    auto a = model::IntNLinear::quantize(w, {}, p);
    const kernels::IntNMatrix v = a->matrix();
    auto codes = torch::empty({9, 172}, torch::kUInt8);
    for (int64_t r = 0; r < 9; ++r)
      kernels::intn_unpack_codes(v.codes + r * v.code_row_bytes(), 0, 172, 3, codes[r].data_ptr<uint8_t>());
    std::vector<kernels::IntNGrid> grids;
    for (int64_t r = 0; r < 9; ++r)
      for (int64_t g = 0; g < v.groups(); ++g) grids.push_back(v.grid(r, g));
    auto b = model::IntNLinear::from_codes(codes, grids, {}, p);
    EXPECT_EQ(a->storage().codes, b->storage().codes);
    EXPECT_EQ(a->storage().scales, b->storage().scales);
    EXPECT_EQ(a->storage().zeros, b->storage().zeros);
    EXPECT_TRUE(torch::equal(a->dense_weight(), b->dense_weight()));
  }
}

TEST(IntNLinear, BadParametersAreInputErrors) {
  auto w = torch::randn({4, 64});
  EXPECT_THROW(model::IntNLinear::quantize(w, {}, {9, 32, true}), InputError);
  EXPECT_THROW(model::IntNLinear::quantize(w, {}, {1, 32, true}), InputError);
  EXPECT_THROW(model::IntNLinear::quantize(w, {}, {4, 48, true}), InputError);
  auto bad = w.clone();
  bad[1][2] = std::nanf("");
  EXPECT_THROW(model::IntNLinear::quantize(bad, {}, {4, 32, true}), InputError);
  EXPECT_THROW(model::NF4Linear::quantize(bad, {}, true), InputError);
}

ModelConfig small_config() {
  ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 172;  // rows that are not whole groups of 64/128: tail groups
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 70;
  c.tie_word_embeddings = false;
  return c;
}

// Every layer of `b` stored exactly as in `a`.
void expect_same_storage(model::LlamaModel& a, model::LlamaModel& b) {
  std::map<std::string, std::shared_ptr<model::LinearLayer>> lb;
  for (auto& [n, l] : b.linear_layers()) lb[n] = l;
  for (auto& [name, l] : a.linear_layers()) {
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
}

TEST(IntNLinear, StoredStateSurvivesCheckpointAndClone) {
  torch::manual_seed(5);
  auto m = model::synth_model(small_config(), 23);
  std::map<std::string, std::shared_ptr<model::LinearLayer>> ls;
  for (auto& [n, l] : m->linear_layers()) ls[n] = l;
  auto q = [&](const std::string& p) { return ls.at(p)->dense_weight(); };
  m->set_linear("model.layers.0.self_attn.q_proj", model::IntNLinear::quantize(q("model.layers.0.self_attn.q_proj"), {}, {4, 32, true}));
  m->set_linear("model.layers.0.mlp.down_proj", model::IntNLinear::quantize(q("model.layers.0.mlp.down_proj"), {}, {3, 128, false}));
  m->set_linear("model.layers.1.mlp.up_proj", model::IntNLinear::quantize(q("model.layers.1.mlp.up_proj"), {}, {8, -1, true}));
  m->set_linear("model.layers.1.mlp.down_proj", model::NF4Linear::quantize(q("model.layers.1.mlp.down_proj"), {}, true));
  m->set_linear("model.layers.1.self_attn.v_proj", model::NF4Linear::quantize(q("model.layers.1.self_attn.v_proj"), {}, false));
  // An act-order layer: the same codes with a permuted g_idx.
  {
    auto l = model::IntNLinear::quantize(q("model.layers.0.mlp.gate_proj"), {}, {4, 32, false});
    kernels::IntNStorage s = l->storage();
    s.g_idx.resize(static_cast<size_t>(s.cols));
    for (int64_t j = 0; j < s.cols; ++j) s.g_idx[j] = static_cast<int32_t>(((j * 5) % s.cols) / 32);
    m->set_linear("model.layers.0.mlp.gate_proj", std::make_shared<model::IntNLinear>(std::move(s)));
  }
  const fs::path dir = fs::temp_directory_path() / ("llmopt-intn-state-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  model::save_model_state(*m, dir.string());
  auto back = model::load_model_state(dir.string());
  fs::remove_all(dir);
  expect_same_storage(*m, *back);
  auto c = model::clone_model(*m);
  expect_same_storage(*m, *c);
  torch::NoGradGuard ng;
  auto ids = torch::tensor({{1, 5, 9, 33, 2, 69}}, torch::kLong);
  EXPECT_TRUE(torch::equal(m->forward(ids), back->forward(ids)));
  // make_linear of a corrupted state is an InputError naming the layer.
  model::LayerState bad = model::IntNLinear::quantize(torch::randn({4, 64}), {}, {4, 32, true})->stored_state();
  bad.meta["bits"] = 12;
  EXPECT_THROW(model::make_linear(bad, "layer x"), InputError);
}

// Every block projection int-N, exported in GPTQ's HF layout and loaded back: the same int-N
// storage (no dense round trip) and the same logits; act-order survives; lm_head stays dense.
TEST(IntNLinear, GptqHfExportLoadsBackAsStored) {
  torch::manual_seed(6);
  ModelConfig cfg = small_config();
  cfg.intermediate_size = 96;  // whole groups of 32
  for (bool sym : {true, false}) {
    auto m = model::synth_model(cfg, 31);
    for (auto& [name, l] : m->linear_layers()) {
      if (name == "lm_head") continue;
      auto q = model::IntNLinear::quantize(l->dense_weight(), l->bias(), {4, 32, sym});
      if (name == "model.layers.1.mlp.gate_proj") {
        kernels::IntNStorage s = q->storage();
        s.g_idx.resize(static_cast<size_t>(s.cols));
        for (int64_t j = 0; j < s.cols; ++j) s.g_idx[j] = static_cast<int32_t>(((j * 5) % s.cols) / 32);
        q = std::make_shared<model::IntNLinear>(std::move(s), l->bias());
      }
      m->set_linear(name, q);
    }
    const fs::path dir = fs::temp_directory_path() / ("llmopt-gptq-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    model::save_model(*m, nullptr, "", model::ExportFormat::Hf, DType::F32, dir.string(),
                      model::CheckpointWeights::AsStored);
    auto back = model::load_model(dir.string());
    fs::remove_all(dir);
    expect_same_storage(*m, *back.model);
    std::map<std::string, std::shared_ptr<model::LinearLayer>> lb;
    for (auto& [n, l] : back.model->linear_layers()) lb[n] = l;
    EXPECT_EQ(lb.at("model.layers.0.self_attn.q_proj")->kind(), "intn");
    EXPECT_EQ(lb.at("lm_head")->kind(), "dense");
    torch::NoGradGuard ng;
    auto ids = torch::tensor({{1, 5, 9, 33, 2, 69}}, torch::kLong);
    EXPECT_TRUE(torch::equal(m->forward(ids), back.model->forward(ids))) << (sym ? "sym" : "asym");
  }
}

TEST(IntNLinear, GptqHfExportRefusesTailGroupsNamingTheTensor) {
  auto m = model::synth_model(small_config(), 37);  // down_proj rows of 172: 64 + 64 + tail of 44
  for (auto& [name, l] : m->linear_layers())
    if (name.ends_with("down_proj"))
      m->set_linear(name, model::IntNLinear::quantize(l->dense_weight(), l->bias(), {4, 64, true}));
  const fs::path dir = fs::temp_directory_path() / ("llmopt-gptq-tail-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  try {
    model::save_model(*m, nullptr, "", model::ExportFormat::Hf, DType::F32, dir.string(),
                      model::CheckpointWeights::AsStored);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("mlp.down_proj.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("tail group"), std::string::npos) << msg;
    EXPECT_NE(msg.find("group size"), std::string::npos) << msg;
  }
  EXPECT_FALSE(fs::exists(dir));
  // Dense export (convert --type) still writes the dequantized weights.
  model::save_model(*m, nullptr, "", model::ExportFormat::Hf, DType::F32, dir.string(), model::CheckpointWeights::Dense);
  EXPECT_TRUE(fs::exists(dir / "model.safetensors"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmopt
