#include "stages/registry.h"

#include "core/error.h"
#include "stages/benchmark/benchmark_stage.h"
#include "stages/evaluate/evaluate_stage.h"
#include "stages/export/export_stage.h"
#include "stages/finetune/finetune_stage.h"
#include "stages/quantize/quantize_stage.h"

namespace llmopt::stages {

void Registry::add(StageInfo info) {
  LLMOPT_ASSERT(find(info.type) == nullptr, "stage type '{}' registered twice", info.type);
  stages_.push_back(std::move(info));
}

const StageInfo* Registry::find(const std::string& type) const {
  for (const auto& s : stages_)
    if (s.type == type) return &s;
  return nullptr;
}

std::vector<std::string> Registry::types() const {
  std::vector<std::string> t;
  for (const auto& s : stages_) t.push_back(s.type);
  return t;
}

void register_builtin_stages(Registry& registry) {
  registry.add<EvaluateStage>();
  registry.add<QuantizeStage>();
  registry.add<ExportStage>();
  registry.add<FinetuneStage>();
  registry.add<BenchmarkStage>();
}

const Registry& builtin_registry() {
  static const Registry r = [] {
    Registry built;
    register_builtin_stages(built);
    return built;
  }();
  return r;
}

}  // namespace llmopt::stages
