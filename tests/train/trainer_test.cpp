#include "train/trainer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "model/synth.h"

namespace llmopt::train {
namespace {

namespace fs = std::filesystem;

// Cosine schedule with warmup, values worked out by hand for steps=11, warmup=2, lr=1, min_lr=0.1:
// warmup gives lr*(s+1)/2 -> 0.5, 1.0; decay spans steps 2..10 (8 intervals), so step 2+8p has
// lr = 0.1 + 0.45 * (1 + cos(pi p)).
TEST(Schedule, WarmupThenCosineKnownValues) {
  TrainerOptions o;
  o.steps = 11;
  o.warmup = 2;
  o.lr = 1.0;
  o.min_lr = 0.1;
  constexpr double kTol = 1e-12;  // double arithmetic on O(1) values
  EXPECT_NEAR(learning_rate_at(o, 0), 0.5, kTol);
  EXPECT_NEAR(learning_rate_at(o, 1), 1.0, kTol);
  EXPECT_NEAR(learning_rate_at(o, 2), 1.0, kTol);
  EXPECT_NEAR(learning_rate_at(o, 4), 0.1 + 0.45 * (1 + std::sqrt(0.5)), kTol);  // p = 1/4
  EXPECT_NEAR(learning_rate_at(o, 6), 0.55, kTol);                             // p = 1/2
  EXPECT_NEAR(learning_rate_at(o, 8), 0.1 + 0.45 * (1 - std::sqrt(0.5)), kTol);  // p = 3/4
  EXPECT_NEAR(learning_rate_at(o, 10), 0.1, kTol);
  o.warmup = 0;
  EXPECT_NEAR(learning_rate_at(o, 0), 1.0, kTol);
}

TEST(TrainerOptions, RejectsBadValues) {
  TrainerOptions o;
  o.min_lr = 2 * o.lr;
  EXPECT_THROW(o.validate(), InputError);
  o = {};
  o.checkpoint_every = 5;  // without a directory
  EXPECT_THROW(o.validate(), InputError);
  o = {};
  o.steps = 0;
  EXPECT_THROW(o.validate(), InputError);
}

TEST(TokenDataset, WindowsAreContiguousSlicesOfTheStream) {
  std::vector<int64_t> tokens(100);
  for (int64_t i = 0; i < 100; ++i) tokens[i] = 1000 + i;
  const TokenDataset data(tokens);
  auto rng = at::make_generator<at::CPUGeneratorImpl>(3);
  const torch::Tensor batch = data.sample(8, 10, rng);
  ASSERT_EQ(batch.sizes(), (std::vector<int64_t>{8, 11}));
  for (int64_t b = 0; b < 8; ++b) {
    const int64_t start = batch[b][0].item<int64_t>() - 1000;
    EXPECT_GE(start, 0);
    EXPECT_LE(start + 10, 99);
    for (int64_t t = 0; t <= 10; ++t) EXPECT_EQ(batch[b][t].item<int64_t>(), 1000 + start + t);
  }
  EXPECT_THROW(TokenDataset(std::vector<int64_t>(5, 1)).sample(1, 10, rng), InputError);
}

// A module with one 2-D and one 1-D parameter whose loss ignores them (zero gradients): AdamW's
// moment update is then exactly zero and only decoupled decay acts, p <- p * (1 - lr * wd), on the
// 2-D weight only.
struct TwoParams : torch::nn::Module {
  TwoParams() {
    matrix = register_parameter("matrix", torch::ones({3, 4}));
    vector = register_parameter("vector", torch::ones({4}));
  }
  torch::Tensor matrix, vector;
};

TEST(Trainer, WeightDecayOnlyOnMatrices) {
  TwoParams m;
  TrainerOptions o;
  o.steps = 1;
  o.warmup = 0;
  o.lr = 0.1;
  o.min_lr = 0.1;
  o.weight_decay = 0.5;
  Trainer trainer(m, [&](const torch::Tensor&) { return (m.matrix.sum() + m.vector.sum()) * 0.0; },
                  o);
  trainer.train([](torch::Generator&) { return torch::zeros({1, 2}, torch::kInt64); });
  EXPECT_TRUE(torch::equal(m.vector, torch::ones({4})));
  EXPECT_TRUE(torch::allclose(m.matrix, torch::full({3, 4}, 0.95f), 0.0, 1e-7));
}

ModelConfig tiny_config() {
  ModelConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 16;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = true;
  return c;
}

// A learnable stream: a fixed pseudo-random sequence of period 23 over 16 symbols, so after a
// few steps the next token is predictable from the previous two.
TokenDataset periodic_data() {
  std::vector<int64_t> tokens;
  uint32_t x = 12345;
  std::vector<int64_t> period;
  for (int i = 0; i < 23; ++i) {
    x = x * 1103515245u + 12345u;
    period.push_back((x >> 16) % 16);
  }
  for (int i = 0; i < 4000; ++i) tokens.push_back(period[i % 23]);
  return TokenDataset(tokens);
}

TrainerOptions tiny_options() {
  TrainerOptions o;
  o.steps = 30;
  o.batch = 4;
  o.seq_len = 24;
  o.lr = 1e-2;
  o.min_lr = 1e-3;
  o.warmup = 3;
  o.seed = 42;
  o.log_every = 1;
  return o;
}

std::vector<uint8_t> parameter_bytes(torch::nn::Module& m) {
  std::vector<uint8_t> bytes;
  for (const auto& p : m.named_parameters()) {
    const torch::Tensor t = p.value().contiguous();
    const auto* data = static_cast<const uint8_t*>(t.data_ptr());
    bytes.insert(bytes.end(), data, data + t.numel() * t.element_size());
  }
  return bytes;
}

// next_token_loss with a frozen head tied to the embedding (LoRA, prompt learning) computes the
// loss and d loss / d hidden blockwise (FrozenHeadCrossEntropy); the reference is torch's
// cross_entropy over the full logits of model.forward, with autograd, in float64. The vocabulary
// (65,536) makes the 96 rows span two blocks (64 + 32 rows). Both sides sum the same terms in a
// different order: at most (V + N) terms of magnitude <= ~ln V + |logits| per row, so the
// difference is bounded by (V + N)·u·(that magnitude) ≈ 6.6e4 · 1.1e-16 · 20 ≈ 1.5e-10 on the
// loss; gradients are products of such sums with O(1) weights, same order.
TEST(NextTokenLoss, FrozenTiedHeadMatchesCrossEntropyOverFullLogits) {
  ModelConfig c = tiny_config();
  c.vocab_size = 65536;
  auto model = model::synth_model(c, 3);
  model->to(torch::kFloat64);
  model->embed_tokens().set_requires_grad(false);
  const torch::Tensor batch = torch::randint(0, c.vocab_size, {4, 25}, torch::kInt64);
  constexpr double kTol = 1e-9;  // ~6x the reassociation bound above

  const torch::Tensor loss = next_token_loss(*model)(batch);
  loss.backward();
  std::vector<std::pair<std::string, torch::Tensor>> grads;
  for (const auto& p : model->named_parameters())
    if (p.value().requires_grad()) {
      ASSERT_TRUE(p.value().grad().defined()) << p.key();
      grads.emplace_back(p.key(), p.value().grad().clone());
      p.value().mutable_grad().zero_();
    }
  ASSERT_GT(grads.size(), 10u);

  const torch::Tensor logits = model->forward(batch.slice(1, 0, -1).contiguous());
  const torch::Tensor ref = torch::nn::functional::cross_entropy(logits.reshape({-1, c.vocab_size}),
                                                                 batch.slice(1, 1).reshape({-1}));
  ref.backward();
  EXPECT_EQ(loss.scalar_type(), torch::kFloat64);
  EXPECT_NEAR(loss.item<double>(), ref.item<double>(), kTol);
  EXPECT_NEAR(ref.item<double>(), std::log(65536.0), 1.0);  // near uniform: a real logits scale
  for (const auto& [name, g] : grads) {
    const torch::Tensor r = model->named_parameters()[name].grad();
    EXPECT_GT(r.abs().max().item<double>(), 0.0) << name;
    EXPECT_LE((g - r).abs().max().item<double>(), kTol) << name;
  }
  EXPECT_FALSE(model->embed_tokens().grad().defined());
}

TEST(Trainer, LossDecreasesOnTinyLlama) {
  auto model = model::synth_model(tiny_config(), 1);
  const TokenDataset data = periodic_data();
  Trainer trainer(*model, next_token_loss(*model), tiny_options());
  int64_t reports = 0;
  const TrainResult r = trainer.train(data, [&](const TrainProgress& p) {
    ++reports;
    EXPECT_EQ(p.step, reports);
    EXPECT_GT(p.lr, 0);
  });
  ASSERT_EQ(r.loss_curve.size(), 30u);
  EXPECT_EQ(reports, 30);
  EXPECT_EQ(r.tokens_seen, 30 * 4 * 24);
  // Starts near ln(16) = 2.77 (uniform over 16 symbols from 0.02-scale weights) and must at least
  // halve on this deterministic sequence.
  EXPECT_NEAR(r.loss_curve.front(), std::log(16.0), 0.2);
  EXPECT_LT(r.final_loss, 0.5 * r.loss_curve.front());
}

TEST(Trainer, SameSeedSameBytes) {
  std::vector<uint8_t> runs[2];
  for (auto& bytes : runs) {
    auto model = model::synth_model(tiny_config(), 1);
    TrainerOptions o = tiny_options();
    o.steps = 8;
    Trainer trainer(*model, next_token_loss(*model), o);
    trainer.train(periodic_data());
    bytes = parameter_bytes(*model);
  }
  ASSERT_FALSE(runs[0].empty());
  EXPECT_TRUE(runs[0] == runs[1]);
}

// Interrupt after 12 of 20 steps (cancellation writes a checkpoint), resume into a model with
// different initial weights, finish: weights and loss curve must equal an uninterrupted run.
TEST(Trainer, ResumeFromCheckpointMatchesUninterruptedRun) {
  const fs::path dir = fs::temp_directory_path() / "llmopt_trainer_resume_test";
  fs::remove_all(dir);
  TrainerOptions o = tiny_options();
  o.steps = 20;
  o.checkpoint_dir = dir.string();

  auto straight = model::synth_model(tiny_config(), 1);
  TrainerOptions no_ckpt = o;
  no_ckpt.checkpoint_dir.clear();
  const TrainResult full = Trainer(*straight, next_token_loss(*straight), no_ckpt).train(periodic_data());

  auto first = model::synth_model(tiny_config(), 1);
  std::atomic<bool> cancel{false};
  const TrainResult part = Trainer(*first, next_token_loss(*first), o)
                               .train(periodic_data(),
                                      [&](const TrainProgress& p) {
                                        if (p.step == 12) cancel = true;
                                      },
                                      &cancel);
  EXPECT_TRUE(part.cancelled);
  EXPECT_EQ(part.steps_done, 12);
  ASSERT_FALSE(part.last_checkpoint.empty());
  EXPECT_EQ(latest_checkpoint(dir.string()), part.last_checkpoint);

  auto second = model::synth_model(tiny_config(), 99);
  TrainerOptions resume = o;
  resume.resume_from = dir.string();
  Trainer trainer(*second, next_token_loss(*second), resume);
  EXPECT_EQ(trainer.step(), 12);
  const TrainResult rest = trainer.train(periodic_data());
  EXPECT_EQ(rest.resumed_from_step, 12);
  EXPECT_EQ(rest.steps_done, 20);
  EXPECT_EQ(rest.loss_curve, full.loss_curve);
  EXPECT_EQ(rest.tokens_seen, full.tokens_seen);
  EXPECT_TRUE(parameter_bytes(*second) == parameter_bytes(*straight));
  fs::remove_all(dir);
}

TEST(Trainer, PeriodicCheckpointsKeepNewestAndLeaveNoTemporaries) {
  const fs::path dir = fs::temp_directory_path() / "llmopt_trainer_periodic_test";
  fs::remove_all(dir);
  auto model = model::synth_model(tiny_config(), 1);
  TrainerOptions o = tiny_options();
  o.steps = 10;
  o.checkpoint_every = 3;
  o.keep_checkpoints = 2;
  o.checkpoint_dir = dir.string();
  const TrainResult r = Trainer(*model, next_token_loss(*model), o).train(periodic_data());
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"step-00000006", "step-00000009"}));
  EXPECT_EQ(r.last_checkpoint, (dir / "step-00000009").string());
  for (const char* f : {"model.pt", "optimizer.pt", "rng.pt", "trainer_state.json"}) {
    EXPECT_TRUE(fs::exists(dir / "step-00000009" / f)) << f;
  }
  fs::remove_all(dir);
}

TEST(Trainer, ResumeFromMissingCheckpointIsInputError) {
  auto model = model::synth_model(tiny_config(), 1);
  TrainerOptions o = tiny_options();
  o.resume_from = "/nonexistent/llmopt/checkpoints";
  try {
    Trainer trainer(*model, next_token_loss(*model), o);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("[train] resume_from '/nonexistent/llmopt/checkpoints'"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace llmopt::train
