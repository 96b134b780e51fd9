#include "pipeline/report/report_content.h"

#include <fmt/format.h>

#include <array>
#include <cmath>

#include "pipeline/report/pareto.h"

namespace llmopt::pipeline::report {
namespace {

// The pipeline writes its own key names; these are the spellings we accept, in preference order.
constexpr std::array kStartKeys = {"start_time", "started_at", "start", "started", "begin_time"};
constexpr std::array kEndKeys = {"end_time", "ended_at", "end", "ended", "finished_at"};

// Looks at the top level of the manifest, then inside its "run" object.
template <size_t N>
std::string manifest_time(const nlohmann::json& manifest, const std::array<const char*, N>& keys) {
  for (const nlohmann::json* object : {&manifest, manifest.is_object() && manifest.contains("run")
                                                      ? &manifest["run"]
                                                      : nullptr}) {
    if (object == nullptr || !object->is_object()) continue;
    for (const char* key : keys) {
      const auto it = object->find(key);
      if (it == object->end()) continue;
      if (it->is_string()) return it->get<std::string>();
      if (it->is_number()) return it->dump();
    }
  }
  return "";
}

void collect_errors(const std::vector<StageRecord>& stages, const std::string& prefix,
                    std::vector<std::string>& errors) {
  for (const auto& stage : stages) {
    if (stage.status == "failed" || !stage.error.empty()) {
      errors.push_back(fmt::format("{}stage {} ({}): {}", prefix, stage.index, stage.name,
                                   stage.error.empty() ? "failed without a message" : stage.error));
    }
  }
}

TradeoffPlot make_tradeoff(const std::vector<EvaluationPoint>& points, const std::string& title,
                           const MetricSpec* x_metric, bool minimize_x) {
  TradeoffPlot plot;
  plot.title = title;
  plot.x_metric = x_metric;
  plot.y_metric = find_metric("perplexity");
  plot.minimize_x = minimize_x;
  std::vector<Objective2D> objectives;
  for (size_t i = 0; i < points.size(); ++i) {
    const auto x = points[i].metric(std::string(x_metric->key));
    const auto y = points[i].metric(std::string(plot.y_metric->key));
    if (!x || !y || !std::isfinite(*x) || !std::isfinite(*y)) continue;
    plot.points.push_back(i);
    objectives.push_back({*x, *y});
  }
  for (const size_t k : pareto_front(objectives, minimize_x, /*minimize_y=*/true)) {
    plot.front.push_back(plot.points[k]);
  }
  return plot;
}

}  // namespace

ReportContent build_report_content(const RunRecord& run) {
  ReportContent content;
  content.points = evaluation_points(run);
  content.started = manifest_time(run.manifest, kStartKeys);
  content.ended = manifest_time(run.manifest, kEndKeys);
  content.stage_seconds = total_wall_seconds(run);
  collect_errors(run.stages, "", content.errors);
  for (const auto& sweep : run.sweep) {
    const std::string prefix = fmt::format("sweep {}: ", sweep.name);
    if (!sweep.error.empty()) content.errors.push_back(prefix + sweep.error);
    collect_errors(sweep.stages, prefix, content.errors);
  }
  // The run's own error adds information only when no stage error already says it.
  if (!run.error.empty()) {
    bool repeated = false;
    for (const auto& error : content.errors) repeated = repeated || error.find(run.error) != std::string::npos;
    if (!repeated) content.errors.insert(content.errors.begin(), "run: " + run.error);
  }

  for (const auto& spec : summary_metrics()) {
    for (const auto& point : content.points) {
      if (point.metric(std::string(spec.key))) {
        content.columns.push_back(&spec);
        break;
      }
    }
  }
  const EvaluationPoint* baseline = find_baseline(content.points);
  for (size_t i = 0; i < content.points.size(); ++i) {
    const EvaluationPoint& point = content.points[i];
    SummaryRow row;
    row.point = i;
    for (const MetricSpec* spec : content.columns) {
      MetricCell cell;
      const std::string key(spec->key);
      cell.value = point.metric(key);
      if (cell.value) cell.text = format_value(*spec, *cell.value);
      if (!point.is_baseline && baseline) {
        cell.delta = delta_vs_baseline(*spec, cell.value, baseline->metric(key));
      }
      row.cells.push_back(std::move(cell));
    }
    content.rows.push_back(std::move(row));
  }

  TradeoffPlot by_size = make_tradeoff(content.points, "Perplexity vs model size",
                                       find_metric("model_bytes"), /*minimize_x=*/true);
  // A trade-off needs something to trade against: the baseline alone is not plotted.
  constexpr size_t kMinTradeoffPoints = 2;
  if (by_size.points.size() >= kMinTradeoffPoints) content.tradeoffs.push_back(std::move(by_size));
  // Generation speed is what a deployed model is judged by; prompt speed stands in without it.
  TradeoffPlot by_speed = make_tradeoff(content.points, "Perplexity vs generation speed",
                                        find_metric("tg_tok_s"), /*minimize_x=*/false);
  if (by_speed.points.size() < kMinTradeoffPoints) {
    by_speed = make_tradeoff(content.points, "Perplexity vs prompt speed",
                             find_metric("pp_tok_s"), /*minimize_x=*/false);
  }
  if (by_speed.points.size() >= kMinTradeoffPoints) content.tradeoffs.push_back(std::move(by_speed));
  return content;
}

std::string stage_metrics_text(const StageRecord& stage) {
  std::string text;
  const auto append = [&](const std::string& key, const std::string& value) {
    text += fmt::format("{}{} {}", text.empty() ? "" : ", ", key, value);
  };
  for (const auto& [key, value] : stage.metrics) {
    const MetricSpec* spec = find_metric(key);
    append(key, spec ? format_value(*spec, value) : format_number(value));
  }
  for (const auto& [key, value] : stage.text_metrics) append(key, value);
  return text;
}

}  // namespace llmopt::pipeline::report
