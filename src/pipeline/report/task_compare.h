// Task scores (the evaluate stage's `<task>/<metric>` metrics, with `<task>/<metric>_stderr`)
// compared with a baseline: delta, the standard error of the difference (independent samples:
// sqrt(se² + se_base²)) and whether it is significant (|delta| > 1.96 · SE of the difference,
// a two-sided 95 % test). Used by the run report (a per-task table, quality-vs-size/speed charts
// and a drill-down per task) and by `llmopt compare` (a table, --json, --html).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pipeline/report/evaluation_points.h"

namespace llmopt::pipeline::report {

struct TaskScore {
  std::string key;     // "arc_easy/acc"
  std::string task;    // "arc_easy"
  std::string metric;  // "acc"
  double value = 0;
  std::optional<double> stderr_value;
  bool higher_is_better = true;  // perplexity-type metrics (…perplexity, bits_per_byte): lower
};

// The task scores of an evaluation, sorted by key (chance, samples, seconds, num_fewshot and the
// *_stderr keys are not scores).
std::vector<TaskScore> task_scores(const EvaluationPoint& point);

struct TaskDelta {
  double delta = 0;                   // value - baseline
  std::optional<double> stderr_diff;  // sqrt(se² + se_base²) when both have one
  bool significant = false;           // |delta| > 1.96 · stderr_diff (false without a stderr)
  bool better = false;                // a significant change in the metric's better direction
};
TaskDelta task_delta(const TaskScore& score, const TaskScore& baseline);

// The mean of the accuracy-type (higher is better) task scores of a point: the quality axis of
// the charts. Absent when the point has none.
std::optional<double> mean_task_score(const EvaluationPoint& point);

// Run report sections (empty strings when no point has task scores).
std::string task_section_html(const std::vector<EvaluationPoint>& points);
std::string task_section_markdown(const std::vector<EvaluationPoint>& points);

// `llmopt compare`: every evaluated model of every run (a sweep run: its baseline and points),
// deltas vs the first run's baseline (its first evaluation).
struct ComparedPoint {
  std::string run;  // run name
  std::string dir;
  EvaluationPoint point;
};
std::vector<ComparedPoint> compare_points(const std::vector<std::string>& run_dirs);
std::string compare_runs_markdown(const std::vector<ComparedPoint>& points);
nlohmann::json compare_runs_json(const std::vector<ComparedPoint>& points);
// A self-contained page (the run report's stylesheet `style`): the task table and the charts.
std::string compare_runs_html(const std::vector<ComparedPoint>& points, const std::string& style);

}  // namespace llmopt::pipeline::report
