// The finetune stage's work as a function, shared by the pipeline stage and `llmopt finetune`.
#pragma once
#include <string>

#include "stages/finetune/finetune_stage.h"

namespace llmopt::stages {

struct FinetuneDirs {
  std::string adapter;      // where the PEFT adapter goes ("" = not written)
  std::string adapter_rel;  // its path relative to the run directory, for StageResult::artifacts
  // Trainer checkpoints (resumed from when one is there; removed after a completed run); "" = none.
  std::string checkpoints;
};

// InputError for inconsistent options (bad LoRA settings, patience without validation ...).
void check_finetune_options(const FinetuneOptions& o);
StageResult run_finetune(const FinetuneOptions& o, ModelState& state, StageContext& ctx, const FinetuneDirs& dirs);

}  // namespace llmopt::stages
