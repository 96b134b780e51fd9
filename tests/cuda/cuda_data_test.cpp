// The reference checks of tests/model/reference_data_test.cpp, run with the model on the GPU
// (CUDA builds only): the same independent references and tolerances must hold there.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "eval/perplexity.h"
#include "model/generate.h"
#include "model/loader.h"

namespace llmopt {
namespace {

const std::string kShared = LLMOPT_SHARED_DIR;
const std::string kStories = kShared + "/models/stories260K/";
const std::string kTiny17m = kShared + "/models/tinyllama-bpe-17m";

std::string read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

model::LoadedModel load_on_gpu(const std::string& path, const std::string& tokenizer = "") {
  model::ModelLoadOptions o;
  o.tokenizer_path = tokenizer;
  auto lm = model::load_model(path, o);
  lm.model->eval();
  lm.model->to(torch::kCUDA);
  return lm;
}

TEST(CudaData, Stories260KGreedyMatchesReference) {
  auto lm = load_on_gpu(kStories + "stories260K.bin", kStories + "tok512.bin");
  const std::string ref_all = read_file(kStories + "REFERENCE.txt");
  const std::string marker = "greedy: ";
  auto pos = ref_all.find(marker);
  ASSERT_NE(pos, std::string::npos);
  auto end = ref_all.find("\n\n== ", pos);
  const std::string ref = ref_all.substr(pos + marker.size(), end - pos - marker.size());
  auto ids32 = lm.tokenizer->encode("Once upon a time", {.add_bos = true});
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  model::SamplingOptions so;
  so.max_new_tokens = 200;
  auto out = model::generate(*lm.model, ids, so);
  std::vector<int32_t> all(ids.begin(), ids.end());
  all.insert(all.end(), out.begin(), out.end());
  const std::string text = lm.tokenizer->decode(all);
  ASSERT_GE(text.size(), 200u);
  const size_t n = std::min(text.size(), ref.size()) - 20;
  EXPECT_EQ(text.substr(0, n), ref.substr(0, n));
}

TEST(CudaData, Stories260KNllMatchesReference) {
  auto lm = load_on_gpu(kStories + "stories260K.bin", kStories + "tok512.bin");
  const std::string text = read_file(kShared + "/text/tinystories_val.txt");
  double sum = 0;
  int64_t count = 0;
  const int64_t target = 10000;
  torch::NoGradGuard ng;
  size_t start = 0;
  while (start < text.size() && count < target) {
    size_t e = text.find("\n\n", start);
    if (e == std::string::npos) e = text.size();
    std::string p = text.substr(start, e - start);
    start = e + 2;
    while (!p.empty() && p.front() == '\n') p.erase(p.begin());
    if (p.empty()) continue;
    auto ids32 = lm.tokenizer->encode(p, {.add_bos = true});
    std::vector<int64_t> ids(ids32.begin(), ids32.end());
    if (ids.size() > 512) ids.resize(512);
    auto logits = lm.model->forward(torch::tensor(ids, torch::kLong).view({1, -1}))[0].to(torch::kCPU);
    auto logp = torch::log_softmax(logits, -1);
    for (size_t i = 0; i + 1 < ids.size() && count < target; ++i, ++count) sum -= logp[i][ids[i + 1]].item<double>();
  }
  EXPECT_EQ(count, target);
  EXPECT_NEAR(sum / count, 1.43033, 0.0005);  // REFERENCE.txt, tolerance from the issue
}

TEST(CudaData, TinyLlama17MLogitsAndPerplexity) {
  auto lm = load_on_gpu(kTiny17m);
  auto ref = nlohmann::json::parse(read_file(kTiny17m + "/reference/logits_prompt.json"));
  auto ids32 = lm.tokenizer->encode(ref["prompt"].get<std::string>(), {.add_bos = false});
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  torch::Tensor logits;
  {
    torch::NoGradGuard ng;
    logits = lm.model->forward(torch::tensor(ids, torch::kLong).view({1, -1}))[0].to(torch::kCPU);
  }
  double max_diff = 0;
  for (const auto& p : ref["positions"]) {
    const int64_t pos = p["position"];
    auto top_ids = std::get<1>(logits[pos].topk(5));
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(top_ids[i].item<int64_t>(), p["top5_ids"][i].get<int64_t>()) << "position " << pos;
      max_diff = std::max(max_diff, std::abs(logits[pos][p["top5_ids"][i].get<int64_t>()].item<double>() -
                                             p["top5_logits"][i].get<double>()));
    }
  }
  std::printf("17M on CUDA: max abs logit diff vs reference %.3g\n", max_diff);
  EXPECT_LT(max_diff, 2e-3);

  auto pref = nlohmann::json::parse(read_file(kTiny17m + "/reference/ppl_test.json"));
  auto t32 = lm.tokenizer->encode(read_file(kTiny17m + "/reference/test_split.txt"), {.add_bos = false});
  std::vector<int64_t> toks(t32.begin(), t32.end());
  eval::PerplexityOptions po;
  po.protocol = eval::PerplexityProtocol::Windows;
  po.ctx = 256;
  auto r = eval::evaluate_perplexity(*lm.model, toks, po);
  const double want = pref["perplexity"];
  std::printf("17M on CUDA: perplexity %.5f (reference %.5f)\n", r.perplexity, want);
  EXPECT_LT(std::abs(r.perplexity / want - 1), 0.001);
}

}  // namespace
}  // namespace llmopt
