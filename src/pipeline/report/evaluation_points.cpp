#include "pipeline/report/evaluation_points.h"

#include <fmt/format.h>

#include <set>

namespace llmopt::pipeline::report {
namespace {

constexpr const char* kEvaluateType = "evaluate";

std::map<std::string, double> point_metrics(const StageRecord& stage) {
  std::map<std::string, double> metrics = stage.metrics;
  // A skipped or failed stage's memory meter says nothing about the model it did not evaluate.
  const bool ran = stage.status == "ok" || stage.status == "cached";
  if (ran && !metrics.count("peak_rss_bytes") && stage.peak_rss_bytes) {
    metrics["peak_rss_bytes"] = *stage.peak_rss_bytes;
  }
  return metrics;
}

std::string first_error(const std::vector<StageRecord>& stages) {
  for (const auto& stage : stages) {
    if (!stage.error.empty()) return fmt::format("stage {} ({}): {}", stage.index, stage.name, stage.error);
  }
  return "";
}

}  // namespace

std::optional<double> EvaluationPoint::metric(const std::string& key) const {
  const auto it = metrics.find(key);
  if (it == metrics.end()) return std::nullopt;
  return it->second;
}

std::vector<EvaluationPoint> evaluation_points(const RunRecord& run) {
  std::vector<EvaluationPoint> points;
  bool have_baseline = false;
  std::set<std::string> used_labels;
  for (const auto& stage : run.stages) {
    if (stage.type != kEvaluateType) continue;
    EvaluationPoint point;
    point.is_baseline = !have_baseline;
    have_baseline = true;
    point.label = point.is_baseline ? "baseline" : stage.name;
    if (point.is_baseline && !stage.name.empty() && stage.name != "baseline") {
      point.label = fmt::format("baseline ({})", stage.name);
    }
    if (point.label.empty() || used_labels.count(point.label)) {
      point.label = fmt::format("{} #{}", stage.name.empty() ? kEvaluateType : stage.name,
                                stage.index);
    }
    used_labels.insert(point.label);
    point.origin = fmt::format("stage {}", stage.index);
    point.status = stage.status;
    point.error = stage.error;
    point.metrics = point_metrics(stage);
    points.push_back(std::move(point));
  }
  for (const auto& sweep : run.sweep) {
    EvaluationPoint point;
    point.is_sweep_point = true;
    point.label = sweep.name;
    point.origin = sweep.dir;
    point.status = sweep.status;
    point.error = sweep.error.empty() ? first_error(sweep.stages) : sweep.error;
    // The sub-run's result is its last evaluation that produced numbers.
    for (auto it = sweep.stages.rbegin(); it != sweep.stages.rend(); ++it) {
      if (it->type == kEvaluateType && !it->metrics.empty()) {
        point.metrics = point_metrics(*it);
        break;
      }
    }
    points.push_back(std::move(point));
  }
  return points;
}

const EvaluationPoint* find_baseline(const std::vector<EvaluationPoint>& points) {
  for (const auto& point : points) {
    if (point.is_baseline) return &point;
  }
  return nullptr;
}

}  // namespace llmopt::pipeline::report
