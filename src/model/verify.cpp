#include "model/verify.h"

#include <random>

#include "core/error.h"
#include "model/loader.h"

namespace llmopt::model {

ReplayStats replay(LlamaModel& ref, LlamaModel& other, const std::vector<std::vector<int64_t>>& seqs) {
  torch::NoGradGuard ng;
  ReplayStats r;
  double kld_sum = 0;
  int64_t agree = 0;
  for (const auto& s : seqs) {
    if (s.empty()) continue;
    auto ids = torch::tensor(s, torch::kLong).unsqueeze(0);
    auto lp = torch::log_softmax(ref.forward(ids.to(ref.device())).to(torch::kCPU, torch::kFloat64)[0], -1);
    auto lq = torch::log_softmax(other.forward(ids.to(other.device())).to(torch::kCPU, torch::kFloat64)[0], -1);
    auto kl = (lp.exp() * (lp - lq)).sum(-1);  // [T]
    kld_sum += kl.sum().item<double>();
    r.kld_max = std::max(r.kld_max, kl.max().item<double>());
    agree += lp.argmax(-1).eq(lq.argmax(-1)).sum().item<int64_t>();
    r.positions += static_cast<int64_t>(s.size());
  }
  r.kld_mean = r.positions ? kld_sum / static_cast<double>(r.positions) : 0;
  r.top1 = r.positions ? static_cast<double>(agree) / static_cast<double>(r.positions) : 1;
  return r;
}

std::vector<std::vector<int64_t>> random_sequences(int64_t n, int64_t len, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ULL);
  std::uniform_int_distribution<int64_t> pick(0, vocab - 1);
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(n), std::vector<int64_t>(static_cast<size_t>(len)));
  for (auto& s : out)
    for (auto& t : s) t = pick(rng);
  return out;
}

ReplayLimits replay_limits(DType t, double max_kld, double min_top1) {
  ReplayLimits l;
  l.max_kld = t == DType::F32 ? 1e-5 : t == DType::F16 ? 1e-3 : 1e-2;
  l.min_top1 = t == DType::F32 ? 0.99 : t == DType::F16 ? 0.9 : 0.8;
  if (max_kld >= 0) l.max_kld = max_kld;
  if (min_top1 >= 0) l.min_top1 = min_top1;
  return l;
}

ReplayStats verify_written_model(LlamaModel& ref, const std::string& path,
                                 const std::vector<std::vector<int64_t>>& sequences, const ReplayLimits& limits,
                                 const std::string& tokenizer_path) {
  ModelLoadOptions lo;
  lo.tokenizer_path = tokenizer_path;
  auto written = load_model(path, lo).model;
  written->to(ref.device());
  const ReplayStats r = replay(ref, *written, sequences);
  if (!(r.kld_mean <= limits.max_kld) || !(r.top1 >= limits.min_top1))
    throw RunError(fmt::format(
        "[export] {}: the written file does not reproduce the model: mean KLD {:.3g} (limit {:.3g}), top-1 "
        "agreement {:.4f} (limit {:.4f}) over {} positions",
        path, r.kld_mean, limits.max_kld, r.top1, limits.min_top1, r.positions));
  return r;
}

}  // namespace llmopt::model
