// LoRA / DoRA layers: gradients against central finite differences of the loss in float64 on a
// tiny model, the stored state round trip (dense and packed bases), merge / unmerge, target
// matching and its errors, and the PEFT adapter files (save -> load gives the same logits; a
// tensor that does not fit is exit 2 naming it).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/lora_adapter.h"
#include "model/lora_linear.h"
#include "model/nf4_linear.h"
#include "model/packed_linear.h"
#include "model/state_io.h"
#include "model/synth.h"

namespace llmopt {
namespace {
namespace fs = std::filesystem;
using model::LoraConfig;
using model::LoraLinear;

ModelConfig tiny_config() {
  ModelConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 50;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = false;
  return c;
}

fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("llmopt_lora_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Random non-zero B (and a perturbed magnitude) so every adapter tensor has a non-trivial gradient.
void randomize_adapters(model::LlamaModel& m, uint64_t seed) {
  torch::NoGradGuard g;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& [p, l] : model::lora_layers(m)) {
    l->lora_B().copy_(torch::randn(l->lora_B().sizes(), gen, l->lora_B().options()) * 0.1);
    if (l->magnitude().defined())
      l->magnitude().mul_(1 + 0.1 * torch::randn(l->magnitude().sizes(), gen, l->magnitude().options()));
  }
}

double loss_of(model::LlamaModel& m, const torch::Tensor& tokens) {
  torch::NoGradGuard g;
  auto logits = m.forward(tokens.slice(1, 0, -1));
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                              tokens.slice(1, 1).reshape({-1}))
      .item<double>();
}

// Central differences in float64: error ≈ h²/6·|L'''| (truncation) + ε·|L|·K/h (rounding, K ~ 10³
// operations accumulating into the loss). With h = 1e-5, |L| ≈ 4 and |L'''| = O(10²) on this tiny
// model both terms stay below 1e-8; the tolerance leaves a factor of 100 on top.
constexpr double kStep = 1e-5;
constexpr double kAbsTol = 1e-6;
constexpr double kRelTol = 1e-5;

void check_gradients(const LoraConfig& cfg, uint64_t seed) {
  auto m = model::synth_model(tiny_config(), seed);
  model::apply_lora(*m, {"all-linear"}, cfg, seed);
  randomize_adapters(*m, seed + 1);
  m->to(torch::kFloat64);
  m->train();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed + 2);
  const torch::Tensor tokens = torch::randint(0, 50, {2, 9}, gen, torch::kInt64);
  // Autograd.
  for (auto& p : m->parameters()) p.mutable_grad() = torch::Tensor();
  {
    auto logits = m->forward(tokens.slice(1, 0, -1));
    auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                     tokens.slice(1, 1).reshape({-1}));
    loss.backward();
  }
  int checked = 0;
  for (auto& [path, l] : model::lora_layers(*m)) {
    struct Param {
      const char* name;
      torch::Tensor t;
    };
    std::vector<Param> params = {{"lora_A", l->lora_A()}, {"lora_B", l->lora_B()}};
    if (cfg.dora) params.push_back({"lora_magnitude", l->magnitude()});
    for (auto& [name, t] : params) {
      ASSERT_TRUE(t.grad().defined()) << path << "." << name;
      ASSERT_EQ(t.scalar_type(), torch::kFloat64);
      auto flat = t.view({-1});
      auto gflat = t.grad().view({-1});
      for (int64_t k : {int64_t{0}, flat.numel() / 2, flat.numel() - 1}) {
        const double orig = flat[k].item<double>();
        // DoRA's norm ‖W + sBA‖ is detached (the paper's §4.3, PEFT): the gradient is that of the
        // loss with the norm held at its current value. Holding it fixed while A or B moves equals
        // rescaling m by wn'/wn, so the difference quotient uses that rescaled magnitude.
        const torch::Tensor wn0 = cfg.dora ? l->weight_norm().clone() : torch::Tensor();
        const torch::Tensor m0 = cfg.dora ? l->magnitude().detach().clone() : torch::Tensor();
        auto eval_at = [&](double v) {
          torch::NoGradGuard g;
          flat[k].fill_(v);
          if (cfg.dora && std::string(name) != "lora_magnitude") l->magnitude().copy_(m0 * l->weight_norm() / wn0);
          const double loss = loss_of(*m, tokens);
          flat[k].fill_(orig);
          if (cfg.dora && std::string(name) != "lora_magnitude") l->magnitude().copy_(m0);
          return loss;
        };
        const double fd = (eval_at(orig + kStep) - eval_at(orig - kStep)) / (2 * kStep);
        const double ad = gflat[k].item<double>();
        EXPECT_NEAR(ad, fd, kAbsTol + kRelTol * std::abs(fd)) << path << "." << name << "[" << k << "]";
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 0);
}

TEST(Lora, GradientsMatchFiniteDifferences) {
  LoraConfig cfg;
  cfg.r = 3;
  cfg.alpha = 5;
  check_gradients(cfg, 11);
}

TEST(Lora, RsLoraGradientsMatchFiniteDifferences) {
  LoraConfig cfg;
  cfg.r = 4;
  cfg.alpha = 3;
  cfg.rslora = true;
  check_gradients(cfg, 12);
}

TEST(Lora, DoraGradientsMatchFiniteDifferences) {
  LoraConfig cfg;
  cfg.r = 2;
  cfg.alpha = 4;
  cfg.dora = true;
  check_gradients(cfg, 13);
}

// The layer's function computed directly in float64 from its tensors (PEFT's formulas).
torch::Tensor reference_forward(const torch::Tensor& W, const torch::Tensor& b, const torch::Tensor& A,
                                const torch::Tensor& B, const torch::Tensor& m, double s, const torch::Tensor& x) {
  auto Wd = W.to(torch::kFloat64), Ad = A.to(torch::kFloat64), Bd = B.to(torch::kFloat64), xd = x.to(torch::kFloat64);
  auto merged = Wd + s * Bd.matmul(Ad);
  if (m.defined()) merged = merged * (m.to(torch::kFloat64) / merged.norm(2, {1})).unsqueeze(1);
  auto y = xd.matmul(merged.t());
  if (b.defined()) y = y + b.to(torch::kFloat64);
  return y;
}

TEST(Lora, ForwardEqualsDirectFormulaOnDenseAndPackedBases) {
  torch::manual_seed(5);
  const auto W = torch::randn({48, 64}) * 0.1, bias = torch::randn({48});
  for (bool dora : {false, true}) {
    for (bool packed : {false, true}) {
      std::shared_ptr<model::LinearLayer> base =
          packed ? std::static_pointer_cast<model::LinearLayer>(model::PackedLinear::pack(W, bias, DType::Q8_0))
                 : std::make_shared<model::DenseLinear>(W, bias);
      const auto Wb = base->dense_weight().clone();
      LoraConfig cfg;
      cfg.r = 4;
      cfg.alpha = 8;
      cfg.dora = dora;
      auto l = std::make_shared<LoraLinear>(base, cfg, 7);
      {
        torch::NoGradGuard g;
        l->lora_B().copy_(torch::randn({48, 4}) * 0.2);
        if (dora) l->magnitude().mul_(1.05);
      }
      l->eval();
      for (int64_t rows : {1, 5, 70}) {
        const auto x = torch::randn({rows, 64});
        const auto ref = reference_forward(Wb, bias, l->lora_A().detach(), l->lora_B().detach(),
                                           dora ? l->magnitude().detach() : torch::Tensor(), 2.0, x);
        torch::NoGradGuard g;
        const auto y = l->forward(x).to(torch::kFloat64);
        // float32 products of 64 terms of size ~1: error a few ulp of the sum, well under 1e-4.
        EXPECT_LT((y - ref).abs().max().item<double>(), 1e-4) << "dora " << dora << " packed " << packed << " rows " << rows;
        // dense_weight() is the effective matrix.
        EXPECT_LT((x.matmul(l->dense_weight().t()) + bias - y).abs().max().item<double>(), 1e-4);
      }
      // Stored state round trip: same bytes, same function.
      auto rebuilt = model::make_linear(l->stored_state(), "test");
      ASSERT_EQ(rebuilt->kind(), "lora");
      const auto x = torch::randn({3, 64});
      torch::NoGradGuard g;
      EXPECT_TRUE(torch::equal(rebuilt->forward(x), l->forward(x)));
      // Merge / unmerge.
      const auto before = l->forward(x).clone();
      l->merge();
      EXPECT_TRUE(l->merged());
      if (packed) {
        EXPECT_EQ(l->base()->kind(), "packed");
        // Re-packed to q8_0: each weight within half a step d = max|block of 32| / 127 of W + ΔW, plus
        // the step's own rounding to float16 (relative 2^-11, times up to 127 steps).
        const auto direct = reference_forward(Wb, torch::Tensor(), l->lora_A().detach(), l->lora_B().detach(),
                                              dora ? l->magnitude().detach() : torch::Tensor(), 2.0,
                                              torch::eye(64))
                                .t();
        const auto step = (direct.reshape({48, 2, 32}).abs().amax(2, true) / 127.0).expand({48, 2, 32}).reshape({48, 64});
        const auto err = (l->base()->dense_weight().to(torch::kFloat64) - direct).abs();
        EXPECT_TRUE((err <= step * (0.5 + 127.0 / 2048.0) + 1e-7).all().item<bool>());
      } else {
        EXPECT_LT((l->forward(x) - before).abs().max().item<double>(), 1e-4);
      }
      l->unmerge();
      EXPECT_FALSE(l->merged());
      EXPECT_LT((l->forward(x) - before).abs().max().item<double>(), 1e-5);
    }
  }
}

// Gradients through a packed or NF4 base (whose forward computes on detached inputs; LoraLinear
// and GradThroughLinear carry d/dx = grad · W with W dequantized for the backward only) equal those
// through dense bases holding the same dequantized weights (torch's own autograd), up to float32
// reassociation.
TEST(Lora, GradientsThroughPackedAndNf4BasesEqualDenseOnes) {
  for (const char* kind : {"q8_0", "nf4"}) {
    auto quantized = model::synth_model(tiny_config(), 21);
    for (auto& [p, l] : quantized->linear_layers()) {
      torch::NoGradGuard g;
      std::shared_ptr<model::LinearLayer> q;
      if (std::string(kind) == "nf4") q = model::NF4Linear::quantize(l->dense_weight(), l->bias(), true);
      else q = model::PackedLinear::pack(l->dense_weight(), l->bias(), DType::Q8_0);
      quantized->set_linear(p, q);
    }
    auto dense = model::synth_model(tiny_config(), 21);
    for (auto& [p, l] : quantized->linear_layers())
      dense->set_linear(p, std::make_shared<model::DenseLinear>(l->dense_weight(), l->bias()));
    LoraConfig cfg;
    cfg.r = 2;
    cfg.dora = true;
    std::vector<std::vector<torch::Tensor>> grads;
    const auto tokens = torch::randint(0, 50, {2, 10}, torch::kInt64);
    for (auto* m : {quantized.get(), dense.get()}) {
      model::apply_lora(*m, {"all-linear"}, cfg, 3);
      // The untied output head stays packed in the quantized model: it must pass gradients back.
      EXPECT_EQ(model::wrap_grad_through(*m), m == quantized.get() ? 1 : 0);
      randomize_adapters(*m, 4);
      m->train();
      auto logits = m->forward(tokens.slice(1, 0, -1));
      torch::nn::functional::cross_entropy(logits.reshape({-1, 50}), tokens.slice(1, 1).reshape({-1})).backward();
      std::vector<torch::Tensor> g;
      for (auto& [p, l] : model::lora_layers(*m))
        for (auto* t : {&l->lora_A(), &l->lora_B(), &l->magnitude()}) g.push_back(t->grad().clone());
      grads.push_back(g);
    }
    ASSERT_EQ(grads[0].size(), grads[1].size());
    for (size_t i = 0; i < grads[0].size(); ++i)
      EXPECT_TRUE(torch::allclose(grads[0][i], grads[1][i], 1e-3, 1e-6)) << kind << " tensor " << i << ": max diff "
          << (grads[0][i] - grads[1][i]).abs().max().item<double>();
  }
}

TEST(Lora, TargetModulesByNameRegexAndErrors) {
  auto m = model::synth_model(tiny_config(), 1);
  const auto q = model::match_target_modules(*m, {"q_proj"});
  ASSERT_EQ(q.size(), 2u);
  EXPECT_EQ(q[0], "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(model::match_target_modules(*m, {R"(model\.layers\.1\..*)"}).size(), 7u);
  EXPECT_EQ(model::match_target_modules(*m, {"all-linear"}).size(), 14u);  // lm_head excluded
  EXPECT_THROW(model::match_target_modules(*m, {"c_attn"}), InputError);
  EXPECT_THROW(model::match_target_modules(*m, {"q_proj", "layers\\.9\\..*"}), InputError);
  EXPECT_THROW(model::match_target_modules(*m, {"(("}), InputError);
  LoraConfig bad;
  bad.r = 0;
  EXPECT_THROW(model::apply_lora(*m, {"q_proj"}, bad, 1), InputError);
}

TEST(Lora, ModelStateAndPeftAdapterRoundTrip) {
  const auto dir = temp_dir("adapter");
  auto m = model::synth_model(tiny_config(), 3);
  LoraConfig cfg;
  cfg.r = 4;
  cfg.alpha = 16;
  cfg.dora = true;
  const auto applied = model::apply_lora(*m, {"q_proj", "v_proj", "down_proj"}, cfg, 5);
  EXPECT_EQ(applied.paths.size(), 6u);
  EXPECT_EQ(applied.trainable_params, 2 * (4 * 32 + 32 * 4 + 32) + 2 * (4 * 32 + 16 * 4 + 16) + 2 * (4 * 64 + 32 * 4 + 32));
  randomize_adapters(*m, 9);
  m->eval();
  const auto tokens = torch::randint(0, 50, {1, 12}, torch::kInt64);
  torch::NoGradGuard g;
  const auto logits = m->forward(tokens);
  // Stage checkpoint (state_io) keeps the adapter layers as stored.
  model::save_model_state(*m, (dir / "state").string());
  auto back = model::load_model_state((dir / "state").string());
  EXPECT_EQ(model::lora_layers(*back).size(), 6u);
  EXPECT_TRUE(torch::equal(back->forward(tokens), logits));
  // PEFT files.
  model::save_peft_adapter(*m, (dir / "adapter").string(), {"base", {"q_proj", "v_proj", "down_proj"}});
  const auto st = io::SafetensorsFile::open((dir / "adapter" / "adapter_model.safetensors").string());
  const auto* a = st.find("base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{4, 32}));
  const auto* b = st.find("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->shape, (std::vector<int64_t>{32, 4}));
  auto fresh = model::synth_model(tiny_config(), 3);
  fresh->eval();
  const auto loaded = model::load_peft_adapter(*fresh, (dir / "adapter").string());
  EXPECT_EQ(loaded.paths.size(), 6u);
  EXPECT_TRUE(torch::allclose(fresh->forward(tokens), logits, 0, 1e-6));
  // An adapter for another shape: exit 2 naming the tensor.
  auto other_cfg = tiny_config();
  other_cfg.hidden_size = 48;
  other_cfg.head_dim = 12;
  auto other = model::synth_model(other_cfg, 3);
  try {
    model::load_peft_adapter(*other, (dir / "adapter").string());
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.down_proj"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("lora_B"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmopt
