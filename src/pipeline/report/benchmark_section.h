// The run report's benchmark section: for every `benchmark` stage, its grid (metrics
// `<figure>@[<device>_]t<T>_b<B>_c<C>`, src/stages/benchmark) as a table (with a Device column
// and a "skipped: no CUDA" row per skipped device) and bar charts of prefill and decode
// tok/s per grid point. Empty when the run has no benchmark stage.
#pragma once
#include <string>

#include "pipeline/report/run_record.h"

namespace llmopt::pipeline::report {

std::string benchmark_section_html(const RunRecord& run);
std::string benchmark_section_markdown(const RunRecord& run);

}  // namespace llmopt::pipeline::report
