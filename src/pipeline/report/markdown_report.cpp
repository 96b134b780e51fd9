#include "pipeline/report/markdown_report.h"

#include "pipeline/report/benchmark_section.h"
#include "pipeline/report/training_section.h"
#include "pipeline/report/task_compare.h"

#include <fmt/format.h>

#include "pipeline/report/report_content.h"
#include "pipeline/report/text_escape.h"

namespace llmopt::pipeline::report {
namespace {

using nlohmann::json;

const char* verdict_mark(Verdict verdict) {
  switch (verdict) {
    case Verdict::Better: return " \u2713";  // check mark
    case Verdict::Worse: return " \u2717";   // ballot x
    default: return "";
  }
}

std::string summary_table(const ReportContent& content) {
  if (content.points.empty()) return "No evaluate stage in this run: nothing to summarise.\n";
  std::string md = "| Evaluation | Status |";
  std::string rule = "|---|---|";
  for (const MetricSpec* spec : content.columns) {
    md += fmt::format(" {} |", markdown_cell(std::string(spec->title)));
    rule += "---:|";
  }
  md += "\n" + rule + "\n";
  for (const SummaryRow& row : content.rows) {
    const EvaluationPoint& point = content.points[row.point];
    const std::string label = point.is_baseline ? "**" + markdown_cell(point.label) + "**"
                                                : markdown_cell(point.label);
    md += fmt::format("| {} | {} |", label, markdown_cell(point.status));
    for (const MetricCell& cell : row.cells) {
      if (!cell.value) {
        md += " \u2014 |";
        continue;
      }
      std::string text = markdown_cell(cell.text);
      if (cell.delta.percent) {
        text += fmt::format(" ({}{})", format_percent_delta(*cell.delta.percent),
                            verdict_mark(cell.delta.verdict));
      }
      md += " " + text + " |";
    }
    md += "\n";
  }
  md += "\nDeltas are relative to the baseline (the first evaluate stage); \u2713 better, "
        "\u2717 worse, no mark within noise.\n";
  return md;
}

std::string tradeoffs(const ReportContent& content) {
  std::string md;
  for (const TradeoffPlot& plot : content.tradeoffs) {
    md += fmt::format("\n**Pareto front, {}** (lower perplexity and {} is better):\n\n",
                      markdown_cell(plot.title), plot.minimize_x ? "smaller size" : "higher speed");
    for (const size_t i : plot.front) {
      const EvaluationPoint& point = content.points[i];
      md += fmt::format("- {}: perplexity {}, {} {}\n", markdown_cell(point.label),
                        format_value(*plot.y_metric, *point.metric(std::string(plot.y_metric->key))),
                        markdown_cell(std::string(plot.x_metric->title)),
                        format_value(*plot.x_metric, *point.metric(std::string(plot.x_metric->key))));
    }
  }
  return md;
}

std::string stage_table(const std::vector<StageRecord>& stages) {
  if (stages.empty()) return "No stages recorded.\n";
  std::string md =
      "| # | Stage | Type | Status | Wall time | Peak RSS | Metrics | Artifacts | Error |\n"
      "|---:|---|---|---|---:|---:|---|---|---|\n";
  for (const auto& stage : stages) {
    std::string artifacts;
    for (const auto& artifact : stage.artifacts) {
      artifacts += (artifacts.empty() ? "" : "<br>") + markdown_cell(artifact);
    }
    const bool failed = stage.status == "failed";
    md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", stage.index,
                      markdown_cell(stage.name), markdown_cell(stage.type),
                      failed ? "**failed**" : markdown_cell(stage.status),
                      stage.wall_s ? format_duration(*stage.wall_s) : "\u2014",
                      stage.peak_rss_bytes ? format_bytes(*stage.peak_rss_bytes) : "\u2014",
                      markdown_cell(stage_metrics_text(stage)), artifacts,
                      stage.error.empty() ? "" : "**" + markdown_cell(stage.error) + "**");
  }
  return md;
}

std::string scalar_text(const json& value) {
  return value.is_string() ? value.get<std::string>() : value.dump();
}

// Manifest keys are not fixed: nested objects and arrays are flattened to dotted keys
// ("inputs.0.sha256"), arrays of scalars to comma lists.
void flatten(const json& value, const std::string& prefix,
             std::vector<std::pair<std::string, std::string>>& rows, int depth = 0) {
  // Deeper nesting than any real manifest is shown as JSON text instead of recursing further.
  constexpr int kMaxNesting = 16;
  if (depth > kMaxNesting) {
    rows.emplace_back(prefix, value.dump());
    return;
  }
  if (value.is_object() && !value.empty()) {
    for (const auto& [key, item] : value.items()) {
      flatten(item, prefix.empty() ? key : prefix + "." + key, rows, depth + 1);
    }
    return;
  }
  if (value.is_array()) {
    bool all_scalar = true;
    for (const auto& item : value) all_scalar = all_scalar && !item.is_structured();
    if (!all_scalar) {
      for (size_t i = 0; i < value.size(); ++i) {
        flatten(value[i], fmt::format("{}.{}", prefix, i), rows, depth + 1);
      }
      return;
    }
    std::string text;
    for (const auto& item : value) text += (text.empty() ? "" : ", ") + scalar_text(item);
    rows.emplace_back(prefix, text);
    return;
  }
  rows.emplace_back(prefix, scalar_text(value));
}

}  // namespace

std::string render_markdown(const RunRecord& run) {
  const ReportContent content = build_report_content(run);
  std::string md = fmt::format("# llmopt run report: {}\n\n", markdown_cell(run.name));
  md += fmt::format("**Status:** {}", markdown_cell(run.status));
  if (!content.started.empty()) md += fmt::format(" · **Started:** {}", markdown_cell(content.started));
  if (!content.ended.empty()) md += fmt::format(" · **Ended:** {}", markdown_cell(content.ended));
  md += fmt::format(" · **Stage time:** {}", format_duration(content.stage_seconds));
  if (run.is_sweep) md += fmt::format(" · **Sweep points:** {}", run.sweep.size());
  md += "\n";
  if (!content.errors.empty() || run.status != "ok") {
    md += fmt::format("\n> **Run {}**\n", markdown_cell(run.status));
    for (const auto& error : content.errors) md += "> - " + markdown_cell(error) + "\n";
  }
  md += "\n## Summary\n\n" + summary_table(content) + tradeoffs(content);
  md += task_section_markdown(content.points);
  md += training_section_markdown(run);
  md += benchmark_section_markdown(run);
  md += fmt::format("\n## {}\n\n", run.is_sweep ? "Stages (shared baseline)" : "Stages");
  md += stage_table(run.stages);
  for (const auto& point : run.sweep) {
    std::string overrides;
    for (const auto& [key, value] : point.overrides.items()) {
      overrides += fmt::format("{}{}={}", overrides.empty() ? "" : " ", key, scalar_text(value));
    }
    md += fmt::format("\n### Sweep point {} ({})\n\nDirectory `{}`, overrides `{}`.\n\n",
                      markdown_cell(point.name), markdown_cell(point.status),
                      markdown_cell(point.dir), markdown_cell(overrides));
    md += stage_table(point.stages);
  }
  md += "\n## Resolved recipe\n\n";
  if (run.config_yaml) {
    const std::string fence = markdown_fence_for(*run.config_yaml);
    md += fence + "yaml\n" + *run.config_yaml;
    if (!run.config_yaml->empty() && run.config_yaml->back() != '\n') md += "\n";
    md += fence + "\n";
  } else {
    md += "config.resolved.yaml was not found in the run directory.\n";
  }
  md += "\n## Manifest\n\n";
  if (run.manifest.is_null()) {
    md += "manifest.json was not found in the run directory.\n";
  } else {
    std::vector<std::pair<std::string, std::string>> rows;
    flatten(run.manifest, "", rows);
    md += "| Key | Value |\n|---|---|\n";
    for (const auto& [key, value] : rows) {
      md += fmt::format("| {} | {} |\n", markdown_cell(key), markdown_cell(value));
    }
  }
  return md;
}

}  // namespace llmopt::pipeline::report
