// report.md: the report's tables as GitHub Markdown (no charts; the Pareto front as a list).
#pragma once
#include <string>

#include "pipeline/report/run_record.h"

namespace llmopt::pipeline::report {

std::string render_markdown(const RunRecord& run);

}  // namespace llmopt::pipeline::report
