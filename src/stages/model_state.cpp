#include "stages/model_state.h"

namespace llmopt::stages {

std::shared_ptr<model::LlamaModel> clone_model(model::LlamaModel& m) {
  torch::NoGradGuard no_grad;
  const io::Checkpoint ckpt = model::model_to_checkpoint(m);
  return model::model_from_checkpoint(ckpt);
}

}  // namespace llmopt::stages
