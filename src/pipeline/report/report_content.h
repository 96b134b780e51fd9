// What a run report says, independent of how it is written: the summary rows with their deltas,
// the quality trade-off plots with their Pareto fronts, the errors and the run's times. The HTML
// and Markdown writers both render this, so the two always agree.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "pipeline/report/evaluation_points.h"
#include "pipeline/report/metric_catalog.h"
#include "pipeline/report/run_record.h"

namespace llmopt::pipeline::report {

struct MetricCell {
  std::optional<double> value;
  std::string text;  // formatted value, "" when absent
  Delta delta;       // vs the baseline; Unknown for the baseline itself
};

struct SummaryRow {
  size_t point = 0;              // index into ReportContent::points
  std::vector<MetricCell> cells;  // one per ReportContent::columns
};

// Perplexity (y, lower is better) against size or speed (x).
struct TradeoffPlot {
  std::string title;
  const MetricSpec* x_metric = nullptr;
  const MetricSpec* y_metric = nullptr;
  bool minimize_x = true;
  std::vector<size_t> points;  // indices into ReportContent::points having both metrics
  std::vector<size_t> front;   // indices into ReportContent::points, ascending x
};

struct ReportContent {
  std::vector<EvaluationPoint> points;
  std::vector<const MetricSpec*> columns;  // catalog metrics present in at least one point
  std::vector<SummaryRow> rows;
  std::vector<TradeoffPlot> tradeoffs;  // only plots with at least two points
  std::vector<std::string> errors;      // "stage 2 (quantize): ..." for every failed stage
  std::string started;                  // from the manifest, "" when unknown
  std::string ended;
  double stage_seconds = 0;  // sum of stage wall times
};

ReportContent build_report_content(const RunRecord& run);

// Stage metrics as "key value, key value", formatted by the catalog where it knows the key.
std::string stage_metrics_text(const StageRecord& stage);

}  // namespace llmopt::pipeline::report
