#include "stages/model_state.h"

#include <filesystem>

#include "infer/llama_cpu.h"
#include "model/state_io.h"
#include "model/torch_engine.h"

namespace llmopt::stages {

std::shared_ptr<model::LlamaModel> clone_model(model::LlamaModel& m) { return model::clone_model(m); }

namespace {
bool input_on_disk(const Provenance& p) {
  std::error_code ec;
  return !p.source_path.empty() && std::filesystem::exists(p.source_path, ec);
}
}  // namespace

std::shared_ptr<model::LlamaModel> ModelState::baseline_model() const {
  if (!model_modified) return model;
  if (baseline) return baseline;
  if (!input_on_disk(provenance)) return nullptr;
  model::ModelLoadOptions lo;
  lo.tokenizer_path = provenance.tokenizer_path;
  auto m = model::load_model(provenance.source_path, lo).model;
  if (model && m) m->to(model->device());
  return m;
}

std::unique_ptr<infer::Engine> ModelState::baseline_engine(const std::string& choice) const {
  if (!model_modified) return nullptr;
  if (baseline) return model::make_engine(baseline, choice);
  if (!input_on_disk(provenance)) return nullptr;
  const bool on_cpu = !model || model->device().is_cpu();
  if (choice == "native" || (choice == "auto" && on_cpu)) {
    io::LoadOptions lo;
    lo.tokenizer_path = provenance.tokenizer_path;
    return std::make_unique<infer::CpuLlama>(io::load_checkpoint(provenance.source_path, lo),
                                             infer::CpuLlama::Storage::Borrow);
  }
  return model::make_engine(baseline_model(), choice);
}

void ModelState::before_modification() {
  if (model_modified) return;
  model_modified = true;
  if (baseline == model) baseline = input_on_disk(provenance) || !model ? nullptr : model::clone_model(*model);
}

}  // namespace llmopt::stages
