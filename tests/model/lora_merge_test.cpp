// Merging LoRA adapters into quantized bases (model/lora_merge.h):
// - the merged dense equivalent before rounding equals dequant(W) + s·B·A computed here in float64;
// - rtn re-quantizes into the base's own format (q4_0 blocks, int4 groups, NF4 double-quantized);
// - the NF4 column quantizer without error propagation is exactly kernels::nf4_quantize (its grid
//   and codes), so GPTQ into NF4 differs from rounding only by the error compensation;
// - GPTQ re-quantization on calibration inputs moves the output distribution less than plain
//   merge-then-round: KL(adapter model || merged) on held-out tokens, q4_0 and NF4 bases.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "model/calibration.h"
#include "model/gptq.h"
#include "model/intn_linear.h"
#include "model/lora_linear.h"
#include "model/lora_merge.h"
#include "model/nf4_linear.h"
#include "model/packed_linear.h"
#include "model/state_io.h"
#include "model/synth.h"

namespace llmopt {
namespace {
using model::LoraConfig;

ModelConfig merge_config() {
  ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 64;
  c.max_position_embeddings = 64;
  return c;
}

// Every projection but the head quantized to `kind`, then LoRA r=4 on all of them with B drawn at
// a size that moves the merged weights off the base's grid.
std::shared_ptr<model::LlamaModel> adapted_model(const std::string& kind, uint64_t seed) {
  auto m = model::synth_model(merge_config(), seed);
  torch::NoGradGuard g;
  for (auto& [p, l] : m->linear_layers()) {
    if (p == "lm_head") continue;
    const torch::Tensor w = l->dense_weight(), b = l->bias();
    if (kind == "q4_0") m->set_linear(p, model::PackedLinear::pack(w, b, DType::Q4_0));
    if (kind == "nf4") m->set_linear(p, model::NF4Linear::quantize(w, b, true));
    if (kind == "int4") {
      model::IntNParams ip;
      ip.bits = 4;
      ip.group_size = 32;
      m->set_linear(p, model::IntNLinear::quantize(w, b, ip));
    }
  }
  LoraConfig cfg;
  cfg.r = 4;
  cfg.alpha = 8;
  model::apply_lora(*m, {"all-linear"}, cfg, seed);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed + 1);
  for (auto& [p, l] : model::lora_layers(*m)) {
    const double wscale = l->base()->dense_weight().abs().mean().item<double>();
    l->lora_B().copy_(torch::randn(l->lora_B().sizes(), gen) * wscale);
  }
  m->eval();
  return m;
}

torch::Tensor random_tokens(int64_t n, int64_t t, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::randint(0, merge_config().vocab_size, {n, t}, gen, torch::kInt64);
}

TEST(LoraMerge, DenseEquivalentIsBasePlusDeltaAndRtnKeepsTheFormat) {
  for (const char* kind : {"q4_0", "nf4", "int4"}) {
    auto m = adapted_model(kind, 3);
    for (auto& [p, l] : model::lora_layers(*m)) {
      torch::NoGradGuard g;
      // float64 from the stored tensors: dequantized base + (alpha / r)·B·A.
      const torch::Tensor direct = l->base()->dense_weight().to(torch::kFloat64) +
                                   (8.0 / 4.0) * l->lora_B().to(torch::kFloat64).matmul(l->lora_A().to(torch::kFloat64));
      const torch::Tensor merged = l->dense_weight().to(torch::kFloat64);
      // float32 sum of W and a 4-term product: a few ulp of values below 1.
      EXPECT_LT((merged - direct).abs().max().item<double>(), 1e-6) << kind << " " << p;
      const auto rtn = model::merge_rtn(*l);
      EXPECT_EQ(rtn->kind(), l->base()->kind()) << kind << " " << p;
      // Rounding onto the grid moves each weight by at most one grid step: bounded by the block's
      // absmax (q4_0: d = absmax/8, half-step errors; NF4 and int4 within the block's range).
      const torch::Tensor err = (rtn->dense_weight().to(torch::kFloat64) - direct).abs();
      EXPECT_LT(err.max().item<double>(), direct.abs().max().item<double>() * 0.25) << kind << " " << p;
      EXPECT_GT(err.max().item<double>(), 0) << "the merged weights must fall off the grid for the test to mean anything";
    }
    model::merge_lora_requantized(*m, {});
    EXPECT_TRUE(model::lora_layers(*m).empty());
  }
}

TEST(LoraMerge, Nf4ColumnQuantizerWithoutPropagationIsNf4Quantize) {
  torch::manual_seed(11);
  const torch::Tensor w = torch::randn({24, 160}) * 0.05;  // 160: two blocks of 64 and a tail of 32
  model::InputStats st;
  st.add(torch::randn({40, 160}), /*hessian=*/true, 0);
  model::DenseLinear dense(w, torch::Tensor());
  for (bool dq : {false, true}) {
    auto q = model::make_nf4_column_quantizer(w, dq);
    model::GptqOptions go;
    go.propagate = false;
    const auto got = model::gptq_quantize(dense, st, *q, go, "test").layer;
    const auto ref = model::NF4Linear::quantize(w, torch::Tensor(), dq);
    EXPECT_TRUE(torch::equal(got->dense_weight(), ref->dense_weight())) << "double_quant " << dq;
  }
}

TEST(LoraMerge, GptqRequantDriftsLessThanPlainRounding) {
  const torch::Tensor calibration = random_tokens(48, 32, 100);
  const torch::Tensor held_out = random_tokens(16, 32, 200);
  for (const char* kind : {"q4_0", "nf4"}) {
    auto adapter = adapted_model(kind, 5);
    auto rtn = model::clone_model(*adapter);
    auto gptq = model::clone_model(*adapter);
    const auto r1 = model::merge_lora_requantized(*rtn, {});
    model::LoraMergeOptions o;
    o.method = "gptq";
    o.calibration = calibration;
    const auto r2 = model::merge_lora_requantized(*gptq, o);
    EXPECT_EQ(r1.merged, 14);
    EXPECT_EQ(r1.requantized, 14);
    EXPECT_EQ(r2.gptq, 14);
    rtn->eval();
    gptq->eval();
    const double k_rtn = model::model_kld(*adapter, *rtn, held_out);
    const double k_gptq = model::model_kld(*adapter, *gptq, held_out);
    std::printf("%s: merge KLD rtn %.6g, gptq %.6g\n", kind, k_rtn, k_gptq);
    EXPECT_GT(k_rtn, 0);
    EXPECT_LE(k_gptq, k_rtn) << kind;
    for (auto& [p, l] : gptq->linear_layers())
      if (p != "lm_head") {
        EXPECT_EQ(l->kind(), kind == std::string("q4_0") ? "packed" : "nf4") << p;
      }
  }
  // GPTQ without calibration windows is exit 2.
  auto m = adapted_model("q4_0", 6);
  model::LoraMergeOptions o;
  o.method = "gptq";
  EXPECT_THROW(model::merge_lora_requantized(*m, o), InputError);
}

}  // namespace
}  // namespace llmopt
