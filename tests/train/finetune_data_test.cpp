// Instruction data and its loss, against references computed here:
//  - the masked loss (logits only at the target positions) equals the mean negative
//    log-likelihood of the targets computed in float64 from the model's full logits, and so do its
//    gradients (tied and untied heads; a row without targets; a batch without any: zero, not NaN);
//  - "eos": false on a jsonl line leaves no EOS target after the response (the eos option true /
//    false overrides every line), "eos": true or no
//    field keeps it, anything else is exit 2 naming file:line;
//  - task data from `llmopt data instruct` (SST-2, tinyllama-bpe-17m's GPT-2 vocabulary) trains
//    exactly the continuation tokens the harness scores: " positive" / " negative" as the ids
//    tokenizer.json gives them, nothing after (the EOS the loader used to append was a target
//    the task never scores, and this model's frozen tied head can give it p 0.05 at most).
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../common/byte_tokenizer.h"
#include "../common/reference_files.h"
#include "core/error.h"
#include "eval/harness.h"
#include "eval/tasks.h"
#include "model/synth.h"
#include "tokenizer/tokenizer.h"
#include "train/finetune_data.h"

namespace llmopt::train {
namespace {
namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("llmopt_finetune_data_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

ModelConfig tiny_config(bool tied) {
  ModelConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 90;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = tied;
  return c;
}

std::vector<torch::Tensor> grads_of(model::LlamaModel& m) {
  std::vector<torch::Tensor> g;
  for (auto& p : m.parameters(/*recurse=*/true)) g.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  return g;
}

void zero_grads(model::LlamaModel& m) {
  for (auto& p : m.parameters(/*recurse=*/true))
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
}

// The loss and its gradients from different float32 arithmetic (the head GEMM over K gathered rows
// vs all B*T rows, log-sum-exp in float32 vs float64): a few hundred float32 ulps of the values.
constexpr double kRelTol = 256 * 1.1920929e-7;

TEST(FinetuneData, MaskedLossEqualsFloat64NllOfTheTargets) {
  for (const bool tied : {true, false}) {
    auto m = model::synth_model(tiny_config(tied), 5);
    const int64_t B = 3, T = 12;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
    const torch::Tensor tokens = torch::randint(0, 90, {B, T + 1}, gen, torch::kInt64);
    torch::Tensor mask = torch::zeros({B, T + 1}, torch::kInt64);
    mask[0].slice(0, 5, 9).fill_(1);  // a response in the middle of row 0
    mask[2].slice(0, 10).fill_(1);    // row 2 ends with its response; row 1 has no target
    const torch::Tensor batch = torch::stack({tokens, mask}, 1);

    const torch::Tensor loss = masked_next_token_loss(*m)(batch);
    loss.backward();
    const auto got = grads_of(*m);
    zero_grads(*m);

    // Reference: all logits, log-softmax in float64, mean over the masked positions by hand.
    const torch::Tensor logp = torch::log_softmax(m->forward(tokens.slice(1, 0, -1)).to(torch::kFloat64), -1);
    torch::Tensor sum = torch::zeros({}, torch::kFloat64);
    int64_t count = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 1; t <= T; ++t)
        if (mask[b][t].item<int64_t>() == 1) {
          sum = sum - logp[b][t - 1][tokens[b][t].item<int64_t>()];
          ++count;
        }
    ASSERT_EQ(count, 4 + 3);
    const torch::Tensor want = sum / static_cast<double>(count);
    want.backward();
    const auto ref = grads_of(*m);
    zero_grads(*m);
    EXPECT_NEAR(loss.item<double>(), want.item<double>(), kRelTol * want.item<double>()) << "tied " << tied;
    ASSERT_EQ(got.size(), ref.size());
    for (size_t i = 0; i < got.size(); ++i) {
      const double scale = ref[i].abs().max().item<double>();
      EXPECT_LE((got[i].to(torch::kFloat64) - ref[i].to(torch::kFloat64)).abs().max().item<double>(),
                kRelTol * std::max(scale, 1e-6))
          << "tied " << tied << " parameter " << i;
    }
  }
  // A batch without any target: zero loss and zero gradients (not 0/0).
  auto m = model::synth_model(tiny_config(true), 5);
  const torch::Tensor none = torch::stack({torch::ones({2, 6}, torch::kInt64), torch::zeros({2, 6}, torch::kInt64)}, 1);
  const torch::Tensor loss = masked_next_token_loss(*m)(none);
  EXPECT_EQ(loss.item<double>(), 0.0);
  loss.backward();
  for (const auto& g : grads_of(*m)) EXPECT_EQ(g.abs().max().item<double>(), 0.0);
}

// Bytes as tokens with an EOS id (89, a byte value no ASCII text here reaches mod 90).
class EosByteTokenizer : public testing::ByteTokenizer {
 public:
  int32_t eos_id() const override { return 89; }
};

std::vector<std::vector<int64_t>> targets_of(const FinetuneDataset& d, int64_t seq_len) {
  const auto rows = d.rows(0, d.size());
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(d.size()));
  for (int64_t r = 0; r < d.size(); ++r)
    for (int64_t t = 1; t <= seq_len; ++t)
      if (rows[r][1][t].item<int64_t>() == 1) out[static_cast<size_t>(r)].push_back(rows[r][0][t].item<int64_t>());
  return out;
}

TEST(FinetuneData, EosFalseLeavesNoEosTarget) {
  const auto dir = temp_dir("eos");
  write(dir / "d.jsonl",
        "{\"prompt\": \"Q:\", \"response\": \" ab\"}\n"
        "{\"prompt\": \"Q:\", \"response\": \" ab\", \"eos\": false}\n"
        "{\"prompt\": \"Q:\", \"response\": \" ab\", \"eos\": true}\n"
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}], "
        "\"eos\": false}\n");
  EosByteTokenizer tk;
  FinetuneDataOptions o;
  o.path = (dir / "d.jsonl").string();
  o.seq_len = 31;
  const auto d = load_finetune_data(o, tk, 1);
  const std::vector<int64_t> ab = {' ' % 90, 'a' % 90, 'b' % 90}, yo = {'y' % 90, 'o' % 90};
  auto with_eos = [](std::vector<int64_t> v) {
    v.push_back(89);
    return v;
  };
  const auto got = targets_of(*d.train, 31);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0], with_eos(ab));
  EXPECT_EQ(got[1], ab);
  EXPECT_EQ(got[2], with_eos(ab));
  EXPECT_EQ(got[3], yo);
  EXPECT_EQ(d.train_tokens, 4 + 3 + 4 + 2);

  // The eos option overrides the lines: true puts the EOS target after every response, false after none.
  o.eos = "true";
  const auto all = targets_of(*load_finetune_data(o, tk, 1).train, 31);
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0], with_eos(ab));
  EXPECT_EQ(all[1], with_eos(ab));
  EXPECT_EQ(all[2], with_eos(ab));
  EXPECT_EQ(all[3], with_eos(yo));
  o.eos = "false";
  const auto none = targets_of(*load_finetune_data(o, tk, 1).train, 31);
  ASSERT_EQ(none.size(), 4u);
  EXPECT_EQ(none[0], ab);
  EXPECT_EQ(none[2], ab);
  EXPECT_EQ(none[3], yo);
  o.eos = "sometimes";
  EXPECT_THROW(load_finetune_data(o, tk, 1), InputError);
  o.eos = "auto";

  write(dir / "bad.jsonl", "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": \"a\", \"response\": \"b\", \"eos\": \"no\"}\n");
  o.path = (dir / "bad.jsonl").string();
  try {
    load_finetune_data(o, tk, 1);
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'eos'"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(InstructTuning, TaskJsonlTrainsExactlyTheScoredContinuationTinyllamaBpe) {
  const std::string model_dir = testref::kTiny17m;
  auto tk = std::shared_ptr<tok::Tokenizer>(tok::load_tokenizer_file(model_dir + "/tokenizer.json"));
  ASSERT_GE(tk->eos_id(), 0);
  // " positive" / " negative" as tokenizer.json's vocabulary spells them (GPT-2 byte level: Ġ = space).
  std::ifstream tj(model_dir + "/tokenizer.json");
  const auto vocab = nlohmann::json::parse(tj)["model"]["vocab"];
  const int64_t pos = vocab.at("Ġpositive").get<int64_t>(), neg = vocab.at("Ġnegative").get<int64_t>();

  const eval::TaskSpec spec = eval::resolve_task("sst2", std::string(LLMOPT_SOURCE_DIR) + "/configs/tasks", testref::kShared);
  eval::TaskSplit split;
  split.part = "train";
  split.held_out = 500;
  split.seed = 1;
  const auto examples = eval::instruction_examples(spec, split);
  ASSERT_GT(examples.size(), 300u);
  const auto dir = temp_dir("sst2");
  std::string jsonl;
  for (const auto& e : examples) jsonl += eval::instruction_json(spec, e).dump() + "\n";
  write(dir / "train.jsonl", jsonl);
  FinetuneDataOptions o;
  o.path = (dir / "train.jsonl").string();
  o.seq_len = 64;  // the longest SST-2 prompt + answer is 63 tokens
  const auto d = load_finetune_data(o, *tk, 8);
  ASSERT_EQ(d.train->size(), static_cast<int64_t>(examples.size()));
  EXPECT_EQ(d.train_tokens, d.train->size());  // one target per row: the answer's single token
  const auto got = targets_of(*d.train, 64);
  const auto rows = d.train->rows(0, d.train->size());
  tok::EncodeOptions plain;
  plain.add_bos = false;
  for (size_t i = 0; i < examples.size(); ++i) {
    const auto& e = examples[i];
    ASSERT_TRUE(e.response == " positive" || e.response == " negative") << e.response;
    EXPECT_EQ(got[i], std::vector<int64_t>{e.response == " positive" ? pos : neg}) << e.prompt;
    // The context before it is the prompt as the tokenizer encodes it alone, no BOS.
    const auto ctx = tk->encode(e.prompt, plain);
    for (size_t t = 0; t < ctx.size(); ++t)
      ASSERT_EQ(rows[static_cast<int64_t>(i)][0][static_cast<int64_t>(t)].item<int64_t>(), ctx[t]) << e.prompt;
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmopt::train
