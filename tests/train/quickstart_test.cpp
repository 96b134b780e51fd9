#include "train/quickstart.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "eval/perplexity.h"
#include "model/torch_engine.h"

namespace llmopt::train {
namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(Quickstart, ConfigIsAboutOneMillionParameters) {
  const ModelConfig c = quickstart_model_config(512);
  c.validate("test");
  // Per layer: q,o 128x128, k,v 128x64, gate/up/down 3x128x384, two norms of 128; plus the tied
  // 512x128 embedding and the final norm.
  const int64_t per_layer = 2 * 128 * 128 + 2 * 128 * 64 + 3 * 128 * 384 + 2 * 128;
  const int64_t total = 4 * per_layer + 512 * 128 + 128;
  EXPECT_EQ(total, 853120);
  const TrainerOptions o = quickstart_trainer_options(0, 0);
  EXPECT_EQ(o.steps, kDefaultQuickstartSteps);
  EXPECT_NO_THROW(o.validate());
}

// A short build exercises every piece: files, tokenizer round trip, parameter count, learning.
TEST(Quickstart, ShortBuildWritesFilesAndLearns) {
  const fs::path dir = fs::temp_directory_path() / "llmopt_quickstart_short_test";
  fs::remove_all(dir);
  QuickstartOptions o;
  o.output_dir = dir.string();
  o.steps = 12;
  o.train_text_bytes = 40000;
  o.eval_text_bytes = 5000;
  std::vector<std::string> phases;
  const model::LoadedModel m = build_quickstart_model(o, [&](const QuickstartProgress& p) {
    if (phases.empty() || phases.back() != p.phase) phases.push_back(p.phase);
  });
  EXPECT_EQ(phases, (std::vector<std::string>{"text", "tokenizer", "train"}));
  ASSERT_TRUE(m.model && m.tokenizer);
  EXPECT_EQ(m.tokenizer->vocab_size(), 512);
  EXPECT_EQ(m.tokenizer_path, (dir / kQuickstartTokenizerFile).string());
  int64_t params = 0;
  for (const auto& p : m.model->parameters()) params += p.numel();
  EXPECT_EQ(params, 853120);
  const std::string eval_text = read_file(dir / kQuickstartEvalTextFile);
  EXPECT_GE(eval_text.size(), 5000u);
  EXPECT_EQ(m.tokenizer->decode(m.tokenizer->encode(eval_text, {.add_bos = true})), eval_text);
  const auto& info = m.source_info.at("quickstart");
  EXPECT_EQ(info.at("steps").get<int64_t>(), 12);
  // 12 steps from ln(512) = 6.24 already cut the loss well below uniform.
  EXPECT_LT(info.at("final_loss").get<double>(), std::log(512.0) - 0.5);
  EXPECT_TRUE(fs::exists(dir / kQuickstartInfoFile));
  fs::remove_all(dir);
}

std::vector<uint8_t> weight_bytes(model::LlamaModel& m) {
  std::vector<uint8_t> bytes;
  for (const auto& p : m.named_parameters()) {
    const torch::Tensor t = p.value().contiguous();
    const auto* data = static_cast<const uint8_t*>(t.data_ptr());
    bytes.insert(bytes.end(), data, data + t.numel() * t.element_size());
  }
  return bytes;
}

// Same seed and thread count -> byte-identical weights and tokenizer file.
TEST(Quickstart, DeterministicForASeed) {
  std::vector<uint8_t> weights[2];
  std::string tokenizers[2];
  for (int run = 0; run < 2; ++run) {
    const fs::path dir = fs::temp_directory_path() / ("llmopt_quickstart_det_test" + std::to_string(run));
    fs::remove_all(dir);
    QuickstartOptions o;
    o.output_dir = dir.string();
    o.seed = 5;
    o.steps = 3;
    o.train_text_bytes = 20000;
    o.eval_text_bytes = 1000;
    const model::LoadedModel m = build_quickstart_model(o);
    weights[run] = weight_bytes(*m.model);
    tokenizers[run] = read_file(dir / kQuickstartTokenizerFile);
    fs::remove_all(dir);
  }
  EXPECT_FALSE(weights[0].empty());
  EXPECT_TRUE(weights[0] == weights[1]);
  EXPECT_EQ(tokenizers[0], tokenizers[1]);
}

TEST(Quickstart, RejectsMissingOutputDir) {
  EXPECT_THROW(build_quickstart_model({}), InputError);
}

// The full default build (~1 minute on 2 cores), reporting the held-out perplexity. Run with
//   test_train --gtest_also_run_disabled_tests --gtest_filter='*FullBuild*'
// (LLMOPT_QUICKSTART_STEPS=N overrides the step count, for timing experiments).
TEST(Quickstart, DISABLED_FullBuildHeldOutPerplexity) {
  const fs::path dir = fs::temp_directory_path() / "llmopt_quickstart_full_test";
  fs::remove_all(dir);
  QuickstartOptions o;
  o.output_dir = dir.string();
  if (const char* steps = std::getenv("LLMOPT_QUICKSTART_STEPS")) o.steps = std::atoll(steps);
  if (const char* bytes = std::getenv("LLMOPT_QUICKSTART_TEXT")) o.train_text_bytes = std::atoll(bytes);
  o.adjust_training = [](TrainerOptions& t) {
    if (const char* v = std::getenv("LLMOPT_QUICKSTART_BATCH")) t.batch = std::atoll(v);
    if (const char* v = std::getenv("LLMOPT_QUICKSTART_LR")) t.lr = std::atof(v), t.min_lr = t.lr / 10;
    if (const char* v = std::getenv("LLMOPT_QUICKSTART_WARMUP")) t.warmup = std::atoll(v);
  };
  const model::LoadedModel m = build_quickstart_model(o, [](const QuickstartProgress& p) {
    if (p.phase != "train" || p.training.step % 50 == 0) {
      std::printf("[cpu %.1f s] %s\n", static_cast<double>(std::clock()) / CLOCKS_PER_SEC,
                  p.message.c_str());
      std::fflush(stdout);
    }
  });
  const std::string eval_text = read_file(dir / kQuickstartEvalTextFile);
  const std::vector<int32_t> ids = m.tokenizer->encode(eval_text, {.add_bos = true});
  eval::PerplexityOptions po;
  po.ctx = 128;
  po.bos_id = m.tokenizer->bos_id();  // the text was encoded with BOS: chunks start with it too
  const eval::PerplexityResult r =
      eval::evaluate_perplexity(model::TorchEngine(m.model), std::vector<int64_t>(ids.begin(), ids.end()), po);
  std::printf("held-out perplexity (llamacpp protocol, ctx 128): %.3f over %lld tokens\n",
              r.perplexity, static_cast<long long>(r.tokens));
  std::printf("%s\n", m.source_info.dump(1).c_str());
  EXPECT_LT(r.perplexity, 10.0);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmopt::train
