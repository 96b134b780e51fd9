// The run report's training section: for every finetune stage that logged train_step events
// (events.jsonl), a chart of the training loss per step (validation losses as points when the
// stage validated) and one of the learning rate. Empty when the run has no training curve.
#pragma once
#include <string>

#include "pipeline/report/run_record.h"

namespace llmopt::pipeline::report {

std::string training_section_html(const RunRecord& run);
// One line per finetune stage: steps, first and last training loss, best validation loss.
std::string training_section_markdown(const RunRecord& run);

}  // namespace llmopt::pipeline::report
