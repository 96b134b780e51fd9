#include "model/synth.h"

namespace llmopt::model {

std::shared_ptr<LlamaModel> synth_model(const ModelConfig& cfg, uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto m = std::make_shared<LlamaModel>(cfg);
  auto gen = at::detail::createCPUGenerator(seed);
  for (auto& p : m->named_parameters()) {
    const auto& name = p.key();
    auto& t = p.value();
    const bool is_norm = name.find("norm") != std::string::npos;
    if (is_norm) {
      t.fill_(1.0f);
    } else if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      t.zero_();
    } else {
      t.normal_(0.0, 0.02, gen);
    }
  }
  return m;
}

}  // namespace llmopt::model
