// compare_table (declared in report.h): the `llmopt compare` table.
#include <fmt/format.h>

#include "core/error.h"
#include "pipeline/report/evaluation_points.h"
#include "pipeline/report/metric_catalog.h"
#include "pipeline/report/report.h"
#include "pipeline/report/run_record.h"
#include "pipeline/report/text_escape.h"

namespace llmopt::pipeline::report {
namespace {

struct CompareRow {
  std::string run;
  std::string evaluation;
  std::string status;
  std::map<std::string, double> metrics;
  double stage_seconds = 0;
};

// The result a run is judged by: its last evaluation that produced numbers (a failed final
// evaluation falls back to the one before it, and the row keeps the run's failed status).
const EvaluationPoint* final_point(const std::vector<EvaluationPoint>& points) {
  for (auto it = points.rbegin(); it != points.rend(); ++it) {
    if ((it->status == "ok" || it->status == "cached") && !it->metrics.empty()) return &*it;
  }
  return points.empty() ? nullptr : &points.back();
}

}  // namespace

std::string compare_table(const std::vector<std::string>& run_dirs) {
  LLMOPT_CHECK_INPUT(!run_dirs.empty(), "[report] compare: expected at least one run directory");
  std::vector<CompareRow> rows;
  for (const auto& dir : run_dirs) {
    const RunRecord run = load_run(dir);
    const std::vector<EvaluationPoint> points = evaluation_points(run);
    if (run.is_sweep) {
      size_t sweep_index = 0;  // sweep points come in run.sweep order
      for (const auto& point : points) {
        if (!point.is_sweep_point) continue;
        double seconds = 0;
        for (const auto& stage : run.sweep[sweep_index++].stages) seconds += stage.wall_s.value_or(0);
        rows.push_back({run.name, point.label, point.status, point.metrics, seconds});
      }
      if (run.sweep.empty()) rows.push_back({run.name, "(empty sweep)", run.status, {}, 0});
      continue;
    }
    CompareRow row{run.name, "\u2014", run.status, {}, total_wall_seconds(run)};
    if (const EvaluationPoint* point = final_point(points)) {
      row.evaluation = point->label;
      row.metrics = point->metrics;
    }
    rows.push_back(std::move(row));
  }

  std::vector<const MetricSpec*> columns;
  for (const auto& spec : summary_metrics()) {
    for (const auto& row : rows) {
      if (row.metrics.count(std::string(spec.key))) {
        columns.push_back(&spec);
        break;
      }
    }
  }
  std::string md = "| Run | Evaluation | Status |";
  std::string rule = "|---|---|---|";
  for (const MetricSpec* spec : columns) {
    md += fmt::format(" {} |", markdown_cell(std::string(spec->title)));
    rule += "---:|";
  }
  md += " Stage time |\n" + rule + "---:|\n";
  const CompareRow& reference = rows.front();
  for (size_t r = 0; r < rows.size(); ++r) {
    const CompareRow& row = rows[r];
    md += fmt::format("| {} | {} | {} |", markdown_cell(row.run), markdown_cell(row.evaluation),
                      markdown_cell(row.status));
    for (const MetricSpec* spec : columns) {
      const std::string key(spec->key);
      const auto it = row.metrics.find(key);
      if (it == row.metrics.end()) {
        md += " \u2014 |";
        continue;
      }
      std::string cell = format_value(*spec, it->second);
      if (r > 0) {
        const auto ref = reference.metrics.find(key);
        const Delta delta = delta_vs_baseline(
            *spec, it->second,
            ref == reference.metrics.end() ? std::nullopt : std::optional<double>(ref->second));
        if (delta.percent) {
          cell += fmt::format(" ({}{})", format_percent_delta(*delta.percent),
                              delta.verdict == Verdict::Better  ? " \u2713"
                              : delta.verdict == Verdict::Worse ? " \u2717"
                                                                : "");
        }
      }
      md += " " + cell + " |";
    }
    md += fmt::format(" {} |\n", row.stage_seconds > 0 ? format_duration(row.stage_seconds) : "\u2014");
  }
  return md;
}

}  // namespace llmopt::pipeline::report
