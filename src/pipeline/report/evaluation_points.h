// The rows of a report's summary: the baseline (the first evaluate stage) and every result to
// compare with it (each later evaluate stage, or each sweep sub-run's last evaluation).
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "pipeline/report/run_record.h"

namespace llmopt::pipeline::report {

struct EvaluationPoint {
  std::string label;   // "baseline", the stage name, or the sweep point name
  std::string origin;  // "stage 2 (evaluate)" or the sweep sub-run directory
  std::string status;  // of the evaluate stage, or of the sweep sub-run
  std::string error;   // first error met on the way to this point, if any
  bool is_baseline = false;
  bool is_sweep_point = false;
  // Numeric metrics of the evaluation; peak_rss_bytes falls back to the stage's own meter.
  std::map<std::string, double> metrics;

  std::optional<double> metric(const std::string& key) const;
};

// Baseline first (when the run has an evaluate stage), then the points to compare, in run order.
std::vector<EvaluationPoint> evaluation_points(const RunRecord& run);

// The baseline of `points`, nullptr when the run has none.
const EvaluationPoint* find_baseline(const std::vector<EvaluationPoint>& points);

}  // namespace llmopt::pipeline::report
