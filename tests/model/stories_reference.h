// The stories260K / 17M reference checks shared by tests/model/reference_data_test.cpp (CPU) and
// tests/cuda/cuda_data_test.cpp (the same checks on the GPU): paths into ../shared and the
// REFERENCE.txt protocols, each returning what the test compares against REFERENCE.txt.
#pragma once
#include <torch/torch.h>

#include <algorithm>
#include <string>
#include <vector>

#include "model/generate.h"
#include "model/loader.h"
#include "../common/reference_files.h"

namespace llmopt::testref {

// Our greedy continuation of "Once upon a time" (with BOS), 200 new tokens, decoded with the prompt.
inline std::string greedy_text(model::LoadedModel& lm) {
  auto ids32 = lm.tokenizer->encode("Once upon a time", {.add_bos = true});
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  model::SamplingOptions so;
  so.max_new_tokens = 200;
  auto out = model::generate(*lm.model, ids, so);
  std::vector<int32_t> all(ids.begin(), ids.end());
  all.insert(all.end(), out.begin(), out.end());
  return lm.tokenizer->decode(all);
}

// Paragraphs of tinystories_val.txt (split on blank lines), as REFERENCE.txt's NLL protocol reads them.
inline std::vector<std::string> tinystories_paragraphs() {
  const std::string text = read_file(kShared + "/text/tinystories_val.txt");
  std::vector<std::string> paras;
  size_t start = 0;
  while (start < text.size()) {
    size_t e = text.find("\n\n", start);
    if (e == std::string::npos) e = text.size();
    std::string p = text.substr(start, e - start);
    while (!p.empty() && p.front() == '\n') p.erase(p.begin());
    if (!p.empty()) paras.push_back(p);
    start = e + 2;
  }
  return paras;
}

// REFERENCE.txt NLL protocol: each paragraph tokenized with BOS (at most 512 tokens) and scored
// from position 0 on its own, until `target` predicted tokens. Returns {mean NLL, tokens, paragraphs}.
struct NllResult {
  double mean_nll = 0;
  int64_t tokens = 0, paragraphs = 0;
};
inline NllResult paragraph_nll(model::LoadedModel& lm, int64_t target = 10000) {
  torch::NoGradGuard ng;
  double sum = 0;
  NllResult r;
  for (const auto& p : tinystories_paragraphs()) {
    if (r.tokens >= target) break;
    auto ids32 = lm.tokenizer->encode(p, {.add_bos = true});
    std::vector<int64_t> ids(ids32.begin(), ids32.end());
    if (ids.size() > 512) ids.resize(512);
    auto logits = lm.model->forward(torch::tensor(ids, torch::kLong).view({1, -1}))[0].to(torch::kCPU);
    auto logp = torch::log_softmax(logits, -1);
    for (size_t i = 0; i + 1 < ids.size() && r.tokens < target; ++i, ++r.tokens)
      sum -= logp[i][ids[i + 1]].item<double>();
    ++r.paragraphs;
  }
  r.mean_nll = r.tokens ? sum / static_cast<double>(r.tokens) : 0;
  return r;
}

}  // namespace llmopt::testref
