// Reference checks of the engine against numbers produced by independent implementations
// (../shared/models/*/REFERENCE.txt and reference/*.json: a pure-Python llama2.c forward and a
// PyTorch fp32 forward cross-checked in float64 numpy), and against llama.cpp's own GGUF files.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "core/threads.h"
#include "eval/perplexity.h"
#include "model/torch_engine.h"
#include "model/generate.h"
#include "model/loader.h"
#include "stories_reference.h"

namespace llmopt {
namespace {

using testref::kShared;
using testref::kStories;
using testref::kTiny17m;
using testref::read_file;

model::LoadedModel load_stories(const std::string& file) {
  model::ModelLoadOptions o;
  o.tokenizer_path = kStories + "tok512.bin";
  auto lm = model::load_model(kStories + file, o);
  lm.model->eval();
  return lm;
}

torch::Tensor logits_for(model::LlamaModel& m, const std::vector<int64_t>& ids) {
  torch::NoGradGuard ng;
  return m.forward(torch::tensor(ids, torch::kLong).view({1, -1}))[0];
}

// REFERENCE.txt: greedy text from "Once upon a time" with BOS must be reproduced exactly (the
// reference generated 256 steps from BOS; we compare the overlapping prefix of our output).
TEST(Stories260KData, GreedyGenerationMatchesReference) {
  auto lm = load_stories("stories260K.bin");
  const std::string ref = testref::greedy_reference();
  ASSERT_FALSE(ref.empty());
  const std::string text = testref::greedy_text(lm);
  ASSERT_GE(text.size(), 200u);
  // Compare the common prefix length (ours is 200 tokens, the reference 256 steps).
  const size_t n = std::min(text.size(), ref.size()) - 20;  // last partial token may differ in bytes
  EXPECT_EQ(text.substr(0, n), ref.substr(0, n));
}

// REFERENCE.txt protocol: paragraphs of tinystories_val.txt (split on blank lines), each
// tokenized with BOS and scored from position 0 independently, until 10000 predicted tokens.
TEST(Stories260KData, NllMatchesReferenceProtocol) {
  auto lm = load_stories("stories260K.bin");
  const auto paras = testref::tinystories_paragraphs();
  tok::EncodeOptions eo;
  eo.add_bos = true;
  // First paragraph's ids are given in REFERENCE.txt (first 48).
  auto first = lm.tokenizer->encode(paras[0], eo);
  const std::vector<int32_t> ref48 = {1,   301, 427, 309, 426, 301, 427, 309, 394, 265, 262, 415, 271, 422, 280, 295,
                                      269, 336, 432, 313, 448, 327, 432, 410, 462, 362, 422, 432, 364, 420, 280, 295,
                                      410, 293, 384, 268, 325, 428, 415, 413, 269, 280, 305, 303, 443, 436, 410, 462};
  ASSERT_GE(first.size(), 48u);
  EXPECT_EQ(std::vector<int32_t>(first.begin(), first.begin() + 48), ref48);
  const auto r = testref::paragraph_nll(lm);
  EXPECT_EQ(r.paragraphs, 105);
  EXPECT_EQ(r.tokens, 10000);
  // Tolerance from the issue: ±0.0005 nats/token.
  EXPECT_NEAR(r.mean_nll, 1.43033, 0.0005);
}

// llama.cpp's own converter output must give the same logits as the llama2.c file.
TEST(Stories260KData, LlamaCppF32GgufMatchesBin) {
  auto bin = load_stories("stories260K.bin");
  model::LoadedModel gg = model::load_model(kStories + "stories260K.llamacpp-f32.gguf");
  std::vector<int64_t> ids = {1, 403, 407, 261, 378, 466, 270, 261, 338, 337, 418, 286, 302, 269, 261};
  auto a = logits_for(*bin.model, ids);
  auto b = logits_for(*gg.model, ids);
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-4);
  // Both tokenizers encode the same way.
  auto t1 = bin.tokenizer->encode("Once upon a time, Lily saw a cat.", {});
  auto t2 = gg.tokenizer->encode("Once upon a time, Lily saw a cat.", {});
  EXPECT_EQ(t1, t2);
}

TEST(Stories260KData, LegacyAndV1AndQ80Agree) {
  auto legacy = load_stories("stories260K.bin");
  auto v1 = load_stories("stories260K_v1_ak42_clebert.bin");
  std::vector<int64_t> ids = {1, 403, 407, 261, 378, 466, 270};
  EXPECT_EQ((logits_for(*legacy.model, ids) - logits_for(*v1.model, ids)).abs().max().item<double>(), 0.0);
  // REFERENCE.txt: greedy 100-token output of the dequantized q80 model equals the fp32 model's.
  auto q8 = load_stories("stories260K_q80_v2.bin");
  model::SamplingOptions so;
  so.max_new_tokens = 100;
  EXPECT_EQ(model::generate(*legacy.model, {1}, so), model::generate(*q8.model, {1}, so));
}

double ppl_windows(model::LoadedModel& lm, const std::string& text, int64_t ctx) {
  tok::EncodeOptions eo;
  eo.add_bos = lm.tokenizer->add_bos_default();
  auto ids32 = lm.tokenizer->encode(text, eo);
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  eval::PerplexityOptions po;
  po.protocol = eval::PerplexityProtocol::Windows;
  po.ctx = ctx;
  return eval::evaluate_perplexity(model::TorchEngine(lm.model), ids, po).perplexity;
}

TEST(Stories260KData, Q4KMWithinThreePercentOfF32) {
  model::LoadedModel f32 = model::load_model(kStories + "stories260K.llamacpp-f32.gguf");
  model::LoadedModel q4 = model::load_model(kStories + "stories260K.llamacpp-Q4_K_M.gguf");
  const std::string text = read_file(kShared + "/text/tinystories_val.txt").substr(0, 60000);
  const double a = ppl_windows(f32, text, 256), b = ppl_windows(q4, text, 256);
  std::printf("stories260K ppl f32 %.4f  Q4_K_M %.4f  (%+.2f%%)\n", a, b, 100 * (b / a - 1));
  EXPECT_LT(std::abs(b / a - 1), 0.03);
}

TEST(TinyLlama17MData, PromptLogitsMatchReference) {
  auto lm = model::load_model(kTiny17m);
  auto ref = nlohmann::json::parse(read_file(kTiny17m + "/reference/logits_prompt.json"));
  auto ids32 = lm.tokenizer->encode(ref["prompt"].get<std::string>(), {.add_bos = false});
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  ASSERT_EQ(ids, ref["token_ids"].get<std::vector<int64_t>>());
  auto logits = logits_for(*lm.model, ids);
  double max_diff = 0;
  for (const auto& p : ref["positions"]) {
    const int64_t pos = p["position"];
    auto top = logits[pos].topk(5);
    auto top_ids = std::get<1>(top);
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(top_ids[i].item<int64_t>(), p["top5_ids"][i].get<int64_t>()) << "position " << pos;
      const double ref_logit = p["top5_logits"][i];
      max_diff = std::max(max_diff, std::abs(logits[pos][p["top5_ids"][i].get<int64_t>()].item<double>() - ref_logit));
    }
    max_diff = std::max(max_diff, std::abs(torch::logsumexp(logits[pos], 0).item<double>() - p["logsumexp"].get<double>()));
  }
  std::printf("17M max abs logit diff vs reference: %.3g\n", max_diff);
  EXPECT_LT(max_diff, 2e-3);
}

TEST(TinyLlama17MData, PerplexityMatchesReference) {
  auto lm = model::load_model(kTiny17m);
  auto ref = nlohmann::json::parse(read_file(kTiny17m + "/reference/ppl_test.json"));
  const std::string text = read_file(kTiny17m + "/reference/test_split.txt");
  auto ids32 = lm.tokenizer->encode(text, {.add_bos = false});
  ASSERT_EQ(static_cast<int64_t>(ids32.size()), ref["n_tokens"].get<int64_t>());
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  eval::PerplexityOptions po;
  po.protocol = eval::PerplexityProtocol::Windows;
  po.ctx = 256;
  auto r = eval::evaluate_perplexity(model::TorchEngine(lm.model), ids, po);
  EXPECT_EQ(r.tokens, ref["n_predicted_tokens"].get<int64_t>());
  EXPECT_EQ(r.chunks, ref["n_windows"].get<int64_t>());
  const double want = ref["perplexity"];
  std::printf("17M perplexity %.5f (reference %.5f)\n", r.perplexity, want);
  EXPECT_LT(std::abs(r.perplexity / want - 1), 0.001);
}

TEST(TinyLlama17MData, GreedyMatchesReferenceUntilNearTie) {
  auto lm = model::load_model(kTiny17m);
  auto ref = nlohmann::json::parse(read_file(kTiny17m + "/reference/greedy_once_upon_a_time.json"));
  auto prompt = ref["prompt_ids"].get<std::vector<int64_t>>();
  model::SamplingOptions so;
  so.max_new_tokens = ref["generated_ids"].size();
  auto out = model::generate(*lm.model, prompt, so);
  auto want = ref["generated_ids"].get<std::vector<int64_t>>();
  // Step 18 is a near tie (margin 1.2e-3 logits); compare strictly up to it.
  size_t strict = 18;
  for (size_t i = 0; i < strict; ++i) EXPECT_EQ(out[i], want[i]) << "step " << i;
  size_t same = 0;
  while (same < out.size() && out[same] == want[same]) ++same;
  std::printf("17M greedy: %zu/%zu tokens identical to the reference\n", same, want.size());
}

}  // namespace
}  // namespace llmopt
