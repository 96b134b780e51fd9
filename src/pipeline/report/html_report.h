// report.html: one self-contained page (inline CSS and SVG, no network) for a run directory.
#pragma once
#include <string>

#include "pipeline/report/run_record.h"

namespace llmopt::pipeline::report {

std::string render_html(const RunRecord& run);

// The report's stylesheet (also used by `llmopt compare --html`).
std::string report_style();

}  // namespace llmopt::pipeline::report
