// Fine-tuning pieces of the training loop and its data: linear / constant schedules (values by
// hand), gradient accumulation equal to one big batch, early stopping, text packing and
// instruction masks (checked against the tokenizer's own encoding of each field), bad data with
// file:line, and an interrupted LoRA run (dropout on, shuffled epochs) resumed from its checkpoint
// giving the bytes of an uninterrupted one.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "model/lora_linear.h"
#include "model/synth.h"
#include "tokenizer/tokenizer.h"
#include "train/bpe_trainer.h"
#include "train/finetune_data.h"
#include "train/story_grammar.h"
#include "train/trainer.h"

namespace llmopt::train {
namespace {
namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("llmopt_finetune_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write(const fs::path& p, const std::string& s) { std::ofstream(p) << s; }

// A small BPE tokenizer trained on grammar stories (as tests/pipeline/tiny_model.h builds one).
std::shared_ptr<tok::Tokenizer> tiny_tokenizer() {
  static std::shared_ptr<tok::Tokenizer> tk = [] {
    const auto dir = temp_dir("tok");
    BpeTrainerOptions bo;
    bo.vocab_size = 300;
    write_llama2c_tokenizer(train_bpe(generate_stories(1, 30000), bo), (dir / "tok.bin").string());
    return std::shared_ptr<tok::Tokenizer>(tok::load_tokenizer_file((dir / "tok.bin").string()));
  }();
  return tk;
}

TEST(Schedule, LinearAndConstantKnownValues) {
  TrainerOptions o;
  o.steps = 11;
  o.warmup = 2;
  o.lr = 1.0;
  o.min_lr = 0.2;
  o.schedule = "linear";
  constexpr double kTol = 1e-12;
  EXPECT_NEAR(learning_rate_at(o, 0), 0.5, kTol);
  EXPECT_NEAR(learning_rate_at(o, 2), 1.0, kTol);
  EXPECT_NEAR(learning_rate_at(o, 6), 0.6, kTol);  // half way from 1.0 to 0.2
  EXPECT_NEAR(learning_rate_at(o, 10), 0.2, kTol);
  o.schedule = "constant";
  EXPECT_NEAR(learning_rate_at(o, 1), 1.0, kTol);
  EXPECT_NEAR(learning_rate_at(o, 10), 1.0, kTol);
  o.schedule = "step";
  EXPECT_THROW(o.validate(), InputError);
}

// Least squares on a linear map: the mean loss over 8 rows equals the mean of two 4-row means, so
// one step with batch 8 and one with 2 x 4 accumulated give the same update up to float32
// reassociation (a few ulp of values ~1: 1e-6).
struct Affine : torch::nn::Module {
  Affine() { w = register_parameter("w", torch::full({3, 5}, 0.1)); }
  torch::Tensor w;
};

TEST(Trainer, GradientAccumulationEqualsOneBigBatch) {
  torch::manual_seed(1);
  const auto x = torch::randn({8, 5}), y = torch::randn({8, 3});
  std::vector<torch::Tensor> weights;
  for (int64_t accum : {1, 2}) {
    Affine m;
    TrainerOptions o;
    o.steps = 3;
    o.warmup = 0;
    o.lr = 0.05;
    o.min_lr = 0.05;
    o.batch = 8 / accum;
    o.grad_accum = accum;
    o.weight_decay = 0;
    o.grad_clip = 0;
    Trainer t(m, [&](const torch::Tensor& rows) {
      const auto idx = rows.reshape({-1});
      return (x.index_select(0, idx).matmul(m.w.t()) - y.index_select(0, idx)).pow(2).mean();
    }, o);
    const int64_t b = o.batch;
    t.train([b](int64_t index, torch::Generator&) { return torch::arange((index * b) % 8, (index * b) % 8 + b); });
    EXPECT_EQ(t.data_position(), 3 * accum);
    weights.push_back(m.w.detach().clone());
  }
  EXPECT_TRUE(torch::allclose(weights[0], weights[1], 0, 1e-6));
}

TEST(Trainer, EarlyStoppingAfterPatienceValidationsWithoutImprovement) {
  Affine m;
  TrainerOptions o;
  o.steps = 100;
  o.warmup = 0;
  o.eval_every = 2;
  o.patience = 3;
  Trainer t(m, [&](const torch::Tensor&) { return m.w.pow(2).sum(); }, o);
  // Validation losses 5, 4, 4.5, 4.2, 4.1 (no new best after step 4): stops at the 5th validation.
  const std::vector<double> vals = {5, 4, 4.5, 4.2, 4.1, 1, 1};
  size_t calls = 0;
  t.set_validation([&] { return vals.at(calls++); });
  const TrainResult r = t.train([](torch::Generator&) { return torch::zeros({1}); });
  EXPECT_TRUE(r.stopped_early);
  EXPECT_EQ(r.steps_done, 10);
  ASSERT_EQ(r.val_curve.size(), 5u);
  EXPECT_EQ(r.val_curve.back().first, 10);
  EXPECT_EQ(r.best_val_loss, 4);
}

TEST(FinetuneData, TextRowsAreConsecutiveSlicesOfTheTokenStream) {
  const auto dir = temp_dir("text");
  const std::string text = generate_stories(7, 4000);
  write(dir / "t.txt", text);
  auto tk = tiny_tokenizer();
  tok::EncodeOptions eo;
  eo.add_bos = tk->add_bos_default();
  const auto ids = tk->encode(text, eo);
  FinetuneDataOptions o;
  o.path = (dir / "t.txt").string();
  o.seq_len = 16;
  o.val_fraction = 0.25;
  const auto d = load_finetune_data(o, *tk, 2);
  const int64_t rows = (static_cast<int64_t>(ids.size()) - 1) / 16;
  const int64_t val_rows = static_cast<int64_t>(rows * 0.25);
  ASSERT_EQ(d.train->size(), rows - val_rows);
  ASSERT_TRUE(d.val);
  ASSERT_EQ(d.val->size(), val_rows);
  const auto all = torch::cat({d.train->rows(0, d.train->size()), d.val->rows(0, val_rows)});
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t <= 16; ++t) ASSERT_EQ(all[r][t].item<int64_t>(), ids[static_cast<size_t>(r * 16 + t)]);
  // Every epoch is a permutation of all training rows; the order depends on the seed only.
  const auto e0 = d.train->batch_at(0, d.train->size(), 5);
  EXPECT_TRUE(torch::equal(std::get<0>(e0.sort(0)), std::get<0>(d.train->rows(0, d.train->size()).sort(0))));
  EXPECT_TRUE(torch::equal(d.train->batch_at(3, 2, 5), d.train->batch_at(3, 2, 5)));
  EXPECT_FALSE(torch::equal(d.train->batch_at(0, d.train->size(), 5), d.train->batch_at(0, d.train->size(), 6)));
  // Too short for a batch: exit 2 naming the file.
  o.seq_len = 3000;
  try {
    load_finetune_data(o, *tk, 2);
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("t.txt"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(FinetuneData, InstructionLossOnlyOnResponseTokens) {
  const auto dir = temp_dir("jsonl");
  write(dir / "d.jsonl",
        "{\"prompt\": \"Tom has a red ball.\", \"response\": \"The ball is red.\"}\n"
        "\n"
        "{\"messages\": [{\"role\": \"user\", \"content\": \"Where is Tom?\"}, "
        "{\"role\": \"assistant\", \"content\": \"Tom is in the park.\"}]}\n");
  auto tk = tiny_tokenizer();
  FinetuneDataOptions o;
  o.path = (dir / "d.jsonl").string();
  o.seq_len = 63;
  const auto d = load_finetune_data(o, *tk, 1);
  ASSERT_EQ(d.format, "jsonl");
  ASSERT_EQ(d.train->size(), 2);
  tok::EncodeOptions plain;
  plain.add_bos = false;
  // prompt/response: the response's tokens are those of prompt + response after the prompt's own
  // (lm-eval's _encode_pair, as the task harness scores a continuation).
  const auto whole = tk->encode("Tom has a red ball.The ball is red.", plain);
  const auto prompt_ids = tk->encode("Tom has a red ball.", plain);
  const std::vector<int32_t> resp(whole.begin() + static_cast<std::ptrdiff_t>(prompt_ids.size()), whole.end());
  const auto reply = tk->encode("Tom is in the park.", plain);
  const bool eos = tk->eos_id() >= 0;
  const auto rows = d.train->rows(0, 2);  // [2, 2, 64]
  auto targets_of = [&](int64_t r) {
    std::vector<int64_t> out;
    for (int64_t t = 1; t < 64; ++t)
      if (rows[r][1][t].item<int64_t>() == 1) out.push_back(rows[r][0][t].item<int64_t>());
    return out;
  };
  std::vector<int64_t> want(resp.begin(), resp.end());
  if (eos) want.push_back(tk->eos_id());
  EXPECT_EQ(targets_of(0), want);
  want.assign(reply.begin(), reply.end());
  if (eos) want.push_back(tk->eos_id());
  EXPECT_EQ(targets_of(1), want);
  EXPECT_EQ(d.train_tokens, static_cast<int64_t>(resp.size() + reply.size() + (eos ? 2 : 0)));
  // Missing field: exit 2 with file:line.
  write(dir / "bad.jsonl", "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": \"only\"}\n");
  o.path = (dir / "bad.jsonl").string();
  try {
    load_finetune_data(o, *tk, 1);
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("response"), std::string::npos) << e.what();
  }
  write(dir / "bad2.jsonl", "{\"prompt\": \"a\", \"response\": \"b\"}\nnot json\n");
  o.path = (dir / "bad2.jsonl").string();
  EXPECT_THROW(load_finetune_data(o, *tk, 1), InputError);
  fs::remove_all(dir);
}

ModelConfig lm_config(int64_t vocab) {
  ModelConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.vocab_size = vocab;
  c.max_position_embeddings = 64;
  return c;
}

std::vector<uint8_t> adapter_bytes(model::LlamaModel& m) {
  std::vector<uint8_t> bytes;
  for (auto& [p, l] : model::lora_layers(m))
    for (const auto& t : {l->lora_A(), l->lora_B()}) {
      const auto c = t.detach().contiguous();
      const auto* d = static_cast<const uint8_t*>(c.data_ptr());
      bytes.insert(bytes.end(), d, d + c.numel() * c.element_size());
    }
  return bytes;
}

TEST(Trainer, InterruptedLoraRunWithDropoutResumesToTheSameBytes) {
  const auto dir = temp_dir("resume");
  write(dir / "t.txt", generate_stories(3, 6000));
  auto tk = tiny_tokenizer();
  FinetuneDataOptions dopt;
  dopt.path = (dir / "t.txt").string();
  dopt.seq_len = 16;
  const auto data = load_finetune_data(dopt, *tk, 3);
  model::LoraConfig lc;
  lc.r = 2;
  lc.dropout = 0.2;
  TrainerOptions o;
  o.steps = 14;
  o.batch = 3;
  o.seq_len = 16;
  o.grad_accum = 2;
  o.lr = 5e-3;
  o.warmup = 2;
  o.seed = 9;
  o.checkpoint_every = 4;
  o.checkpoint_dir = (dir / "ckpt").string();
  auto batches = [&](int64_t i, torch::Generator&) { return data.train->batch_at(i, 3, 9); };
  auto run = [&](int64_t stop_after, const std::string& resume) {
    auto m = model::synth_model(lm_config(tk->vocab_size()), 1);
    model::apply_lora(*m, {"all-linear"}, lc, 4);
    TrainerOptions oo = o;
    oo.resume_from = resume;
    Trainer t(*m, masked_next_token_loss(*m), oo);
    std::atomic<bool> cancel{false};
    t.train(batches, [&](const TrainProgress& p) {
      if (p.step == stop_after) cancel = true;
    }, &cancel);
    return std::make_pair(m, t.data_position());
  };
  const auto [straight, pos] = run(-1, "");
  EXPECT_EQ(pos, 28);
  fs::remove_all(dir / "ckpt");
  run(7, "");  // cancelled at step 7: a checkpoint at step 7 (after the one at 4)
  const auto [resumed, pos2] = run(-1, (dir / "ckpt").string());
  EXPECT_EQ(pos2, 28);
  EXPECT_TRUE(adapter_bytes(*straight) == adapter_bytes(*resumed));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmopt::train
