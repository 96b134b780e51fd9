// The torch-free CPU engine (src/infer) against the references in ../shared, in a test binary
// that links no torch: stories260K's greedy text (REFERENCE.txt, llama2.c's own run), and the
// 17M HF model's per-position logits and greedy ids (reference/*.json, written by PyTorch).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "../common/reference_files.h"
#include "core/threads.h"
#include "infer/generate.h"
#include "infer/llama_cpu.h"

namespace llmopt {
namespace {

using nlohmann::json;

TEST(CpuLlamaData, Stories260KGreedyTextMatchesReference) {
  auto lm = infer::load_cpu_model(testref::kStories + "stories260K.bin", testref::kStories + "tok512.bin");
  ASSERT_NE(lm.tokenizer, nullptr);
  auto ids32 = lm.tokenizer->encode("Once upon a time", {.add_bos = true});
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  infer::SamplingOptions so;
  so.max_new_tokens = 200;
  auto out = infer::generate(*lm.model, ids, so);
  std::vector<int32_t> all(ids.begin(), ids.end());
  all.insert(all.end(), out.begin(), out.end());
  const std::string ref = testref::greedy_reference();
  ASSERT_FALSE(ref.empty());
  const std::string ours = lm.tokenizer->decode(all);
  // REFERENCE.txt runs 256 steps; we generate 200 tokens: ours must be a prefix of it.
  EXPECT_EQ(ref.substr(0, ours.size()), ours);
  EXPECT_GT(ours.size(), 400u);
}

// Logits after each prefix of the 17M reference prompt, through prefill (one call per prefix)
// and through decode (one token at a time), against PyTorch's: same top-5 ids, top-5 logits and
// logsumexp within the 2e-3.
TEST(CpuLlamaData, Tiny17mLogitsMatchReferenceThroughPrefillAndDecode) {
  constexpr float kTol = 2e-3f;
  const json ref = json::parse(testref::read_file(testref::kTiny17m + "/reference/logits_prompt.json"));
  auto lm = infer::load_cpu_model(testref::kTiny17m);
  const auto ids = ref["token_ids"].get<std::vector<int64_t>>();
  const int64_t V = lm.model->config().vocab_size;
  std::vector<float> logits(V);
  auto check = [&](int64_t t, const char* how) {
    SCOPED_TRACE(std::string(how) + " position " + std::to_string(t));
    const json& p = ref["positions"][t];
    std::vector<int64_t> order(V);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + 5, order.end(),
                      [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
    const auto top5 = p["top5_ids"].get<std::vector<int64_t>>();
    const auto top5_logits = p["top5_logits"].get<std::vector<float>>();
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(order[i], top5[i]);
      EXPECT_NEAR(logits[top5[i]], top5_logits[i], kTol);
    }
    double mx = *std::max_element(logits.begin(), logits.end()), s = 0;
    for (float l : logits) s += std::exp(l - mx);
    EXPECT_NEAR(mx + std::log(s), p["logsumexp"].get<double>(), kTol);
  };
  auto decode_cache = lm.model->make_cache(static_cast<int64_t>(ids.size()));
  for (int64_t t = 0; t < static_cast<int64_t>(ids.size()); ++t) {
    auto cache = lm.model->make_cache(static_cast<int64_t>(ids.size()));
    lm.model->prefill(ids.data(), t + 1, *cache, logits.data());
    check(t, "prefill");
    lm.model->decode(ids[t], *decode_cache, logits.data());
    check(t, "decode");
  }
}

TEST(CpuLlamaData, Tiny17mGreedyIdsMatchReference) {
  const json ref = json::parse(testref::read_file(testref::kTiny17m + "/reference/greedy_once_upon_a_time.json"));
  auto lm = infer::load_cpu_model(testref::kTiny17m);
  infer::SamplingOptions so;
  so.max_new_tokens = ref["n_new_tokens"].get<int64_t>();
  EXPECT_EQ(infer::generate(*lm.model, ref["prompt_ids"].get<std::vector<int64_t>>(), so),
            ref["generated_ids"].get<std::vector<int64_t>>());
}

}  // namespace
}  // namespace llmopt
