#include "stages/model_state.h"

#include <filesystem>

#include "model/state_io.h"

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

void ModelState::before_modification() {
  if (model_modified) return;
  model_modified = true;
  if (baseline == model) baseline = input_on_disk(provenance) || !model ? nullptr : model::clone_model(*model);
}

}  // namespace llmopt::stages
