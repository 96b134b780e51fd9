// Gradient checkpointing (stages/finetune/grad_checkpoint.h): the checkpointed loss has the value
// of the plain one and the same gradients for every trainable tensor (LoRA with dropout, whose
// mask must be drawn again identically when a layer is re-run; full fine-tuning), in float64 so
// that only reassociation separates them.
#include "stages/finetune/grad_checkpoint.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "model/lora_linear.h"
#include "model/synth.h"
#include "train/finetune_data.h"

namespace llmopt {
namespace {

ModelConfig tiny() {
  ModelConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 40;
  c.max_position_embeddings = 32;
  return c;
}

std::vector<torch::Tensor> grads_of(model::LlamaModel& m, const train::LossFn& loss, const torch::Tensor& batch,
                                    double* value) {
  for (auto& p : m.parameters()) p.mutable_grad() = torch::Tensor();
  torch::manual_seed(123);  // the same dropout stream for both losses
  const torch::Tensor l = loss(batch);
  *value = l.item<double>();
  l.backward();
  std::vector<torch::Tensor> g;
  for (auto& p : m.parameters())
    if (p.requires_grad()) g.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  return g;
}

TEST(GradCheckpoint, SameLossAndGradientsAsThePlainPass) {
  for (const bool lora : {true, false}) {
    auto m = model::synth_model(tiny(), 4);
    if (lora) {
      model::LoraConfig cfg;
      cfg.r = 4;
      cfg.dropout = 0.2;
      model::apply_lora(*m, {"all-linear"}, cfg, 4);
      torch::NoGradGuard g;
      for (auto& [p, l] : model::lora_layers(*m)) l->lora_B().normal_(0, 0.1);
    }
    m->to(torch::kFloat64);
    m->train();
    const torch::Tensor batch = torch::randint(0, 40, {3, 17}, torch::kInt64);
    double plain = 0, ckpt = 0;
    const auto g1 = grads_of(*m, train::masked_next_token_loss(*m), batch, &plain);
    const auto g2 = grads_of(*m, stages::checkpointed_next_token_loss(*m), batch, &ckpt);
    EXPECT_NEAR(plain, ckpt, 1e-12) << "lora " << lora;
    ASSERT_EQ(g1.size(), g2.size());
    ASSERT_FALSE(g1.empty());
    for (size_t i = 0; i < g1.size(); ++i) {
      const double scale = g1[i].abs().max().item<double>();
      EXPECT_GT(scale, 0) << "lora " << lora << " tensor " << i;
      // float64: a few hundred ulp of reassociation at most.
      EXPECT_LE((g1[i] - g2[i]).abs().max().item<double>(), 1e-12 + 1e-10 * scale) << "lora " << lora << " tensor " << i;
    }
  }
}

}  // namespace
}  // namespace llmopt
