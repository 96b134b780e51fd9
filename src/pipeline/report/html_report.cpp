#include "pipeline/report/html_report.h"

#include "pipeline/report/benchmark_section.h"
#include "pipeline/report/training_section.h"
#include "pipeline/report/task_compare.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <map>
#include <string_view>

#include "pipeline/report/report_content.h"
#include "pipeline/report/svg_chart.h"
#include "pipeline/report/text_escape.h"

namespace llmopt::pipeline::report {
namespace {

using nlohmann::json;

constexpr std::string_view kStyle = R"css(
:root{--ink:#0f172a;--muted:#64748b;--line:#e2e8f0;--bg:#f1f5f9;--card:#fff;--good:#15803d;
--bad:#b91c1c;--accent:#2563eb}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1400px;margin:0 auto;padding:20px 28px 40px}
header.run{display:flex;flex-wrap:wrap;align-items:center;gap:10px 16px;margin-bottom:4px}
header.run h1{font-size:24px;margin:0;word-break:break-all}
.meta{color:var(--muted);font-size:13px;margin:2px 0 10px}
.meta b{color:var(--ink);font-weight:600}
nav{display:flex;gap:6px;flex-wrap:wrap;margin:10px 0 4px}
nav a{color:var(--accent);text-decoration:none;font-size:13px;padding:3px 10px;border:1px solid
#cbd5e1;border-radius:999px;background:#fff}
nav a:hover{background:#eff6ff}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px 20px;
margin:16px 0;box-shadow:0 1px 2px rgba(15,23,42,.05);overflow-x:auto}
h2{font-size:17px;margin:0 0 10px}
h3{font-size:14px;margin:14px 0 6px}
p.note{color:var(--muted);font-size:12.5px;margin:8px 0 0}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-size:11.5px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);
font-weight:600;background:#f8fafc;white-space:nowrap}
td.num,th.num{text-align:right;white-space:nowrap}
table.summary th{white-space:normal;vertical-align:bottom}
td.small{font-size:12px;color:#334155;max-width:360px}
tbody tr:hover td{background:#f8fafc}
tr.baseline td{background:#f8fafc}
tr.baseline td.label{font-weight:700}
td.label{font-weight:600;white-space:nowrap}
.origin{display:block;font-size:11.5px;color:var(--muted);font-weight:400}
.delta{display:block;font-size:11.5px;font-weight:600}
.delta.better{color:var(--good)}.delta.worse{color:var(--bad)}.delta.neutral,.delta.unknown{color:var(--muted);font-weight:400}
.missing{color:#cbd5e1}
.tag{display:inline-block;margin-left:8px;padding:0 5px;border-radius:4px;font-size:10.5px;
font-weight:600;color:#1d4ed8;background:#eff6ff;border:1px solid #bfdbfe;vertical-align:1px}
.badge{display:inline-block;padding:1px 9px;border-radius:999px;font-size:11.5px;font-weight:700;
text-transform:uppercase;letter-spacing:.03em;white-space:nowrap}
.status-ok{background:#dcfce7;color:#166534}.status-failed{background:#fee2e2;color:#991b1b}
.status-interrupted{background:#fef3c7;color:#92400e}.status-cached{background:#dbeafe;color:#1e40af}
.status-skipped,.status-unknown{background:#e2e8f0;color:#475569}
header.run .badge{font-size:13px;padding:3px 12px}
tr.failed td{background:#fef2f2}
tr.error-row td{background:#fef2f2;padding-top:0}
pre{margin:0;font:12.5px/1.5 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre.error{background:#fff;border-left:3px solid #dc2626;color:#7f1d1d;padding:6px 10px;
white-space:pre-wrap;word-break:break-word}
.alert{border:1px solid #fecaca;background:#fef2f2;border-radius:10px;padding:12px 16px;margin:14px 0}
.alert h2{color:#991b1b;font-size:15px;margin:0 0 6px}
.alert pre{white-space:pre-wrap;color:#7f1d1d}
pre.recipe{background:#0f172a;color:#e2e8f0;padding:14px 16px;border-radius:8px;overflow:auto}
.timebar{height:5px;background:#93c5fd;border-radius:3px;margin:4px 0 0 auto;min-width:2px}
.charts{display:flex;flex-wrap:wrap;gap:14px}
.chart-card{border:1px solid var(--line);border-radius:8px;padding:8px;background:#fff}
.chart-card svg{display:block;max-width:100%;height:auto}
details{border:1px solid var(--line);border-radius:8px;margin:8px 0;padding:6px 12px}
details[open]{padding-bottom:12px}
summary{cursor:pointer;font-weight:600}
summary .badge{margin-left:8px}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f1f5f9;padding:1px 5px;border-radius:4px}
table.kv th{width:220px;text-transform:none;letter-spacing:0;font-size:12.5px;color:#334155;background:#f8fafc}
table.kv td{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
table.kv table.kv{margin:0}
table.records th{text-transform:none;letter-spacing:0;font-size:12px}
table.records td{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
a{color:var(--accent)}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:20px}
)css";

std::string badge(const std::string& status) {
  static constexpr std::array<std::string_view, 5> kKnown = {"ok", "failed", "interrupted", "cached",
                                                            "skipped"};
  const bool known = std::find(kKnown.begin(), kKnown.end(), status) != kKnown.end();
  return fmt::format("<span class=\"badge status-{}\">{}</span>", known ? status : "unknown",
                     html_escape(status));
}

const char* verdict_class(Verdict verdict) {
  switch (verdict) {
    case Verdict::Better: return "better";
    case Verdict::Worse: return "worse";
    case Verdict::Neutral: return "neutral";
    default: return "unknown";
  }
}

// Only plain relative paths become links: an absolute path or anything with a scheme
// ("javascript:", "http:") from the run directory is shown as text.
bool linkable(const std::string& path) {
  return !path.empty() && path[0] != '/' && path.find(':') == std::string::npos;
}

std::string artifact_html(const std::string& run_dir, const std::string& artifact) {
  std::string size;
  std::error_code ec;
  if (!run_dir.empty() && linkable(artifact)) {
    const auto bytes = std::filesystem::file_size(std::filesystem::path(run_dir) / artifact, ec);
    if (!ec) size = fmt::format(" <span class=\"origin\" style=\"display:inline\">({})</span>",
                                format_bytes(static_cast<double>(bytes)));
  }
  if (!linkable(artifact)) return fmt::format("<code>{}</code>{}", html_escape(artifact), size);
  return fmt::format("<a href=\"{0}\"><code>{0}</code></a>{1}", html_escape(artifact), size);
}

std::string json_scalar_text(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  return value.dump();
}

// True for a non-empty array of objects that all have the same keys.
bool same_keyed_objects(const json& array) {
  if (array.empty() || !array[0].is_object() || array[0].empty()) return false;
  for (const auto& item : array) {
    if (!item.is_object() || item.size() != array[0].size()) return false;
    for (const auto& [key, unused] : array[0].items()) {
      if (!item.contains(key)) return false;
    }
  }
  return true;
}

// Manifest keys are not fixed: objects become key/value tables, arrays of objects numbered
// nested tables, arrays of scalars comma lists.
std::string json_html(const json& value, int depth) {
  // Deeper nesting than any real manifest is shown as JSON text instead of recursing further.
  constexpr int kMaxNesting = 16;
  if (depth > kMaxNesting) return html_escape(value.dump());
  if (value.is_object()) {
    if (value.empty()) return "<span class=\"missing\">{}</span>";
    std::string html = "<table class=\"kv\">";
    for (const auto& [key, item] : value.items()) {
      html += fmt::format("<tr><th>{}</th><td>{}</td></tr>", html_escape(key),
                          json_html(item, depth + 1));
    }
    return html + "</table>";
  }
  if (value.is_array()) {
    bool all_scalar = true;
    for (const auto& item : value) all_scalar = all_scalar && !item.is_structured();
    if (all_scalar) {
      std::string text;
      for (const auto& item : value) text += (text.empty() ? "" : ", ") + json_scalar_text(item);
      return html_escape(text);
    }
    if (same_keyed_objects(value)) {
      // Records (e.g. inputs: path, sha256, size): one row each under a shared header.
      std::string html = "<table class=\"records\"><thead><tr>";
      for (const auto& [key, item] : value[0].items()) html += "<th>" + html_escape(key) + "</th>";
      html += "</tr></thead><tbody>";
      for (const auto& record : value) {
        html += "<tr>";
        for (const auto& [key, item] : record.items()) html += "<td>" + json_html(item, depth + 1) + "</td>";
        html += "</tr>";
      }
      return html + "</tbody></table>";
    }
    std::string html = "<table class=\"kv\">";
    for (size_t i = 0; i < value.size(); ++i) {
      html += fmt::format("<tr><th>[{}]</th><td>{}</td></tr>", i, json_html(value[i], depth + 1));
    }
    return html + "</table>";
  }
  return html_escape(json_scalar_text(value));
}

std::string summary_section(const ReportContent& content) {
  std::string html = "<section id=\"summary\"><h2>Summary</h2>";
  if (content.points.empty()) {
    return html + "<p class=\"note\">No evaluate stage in this run: nothing to summarise.</p></section>\n";
  }
  html += "<table class=\"summary\"><thead><tr><th>Evaluation</th><th>Status</th>";
  for (const MetricSpec* spec : content.columns) {
    html += fmt::format("<th class=\"num\">{}</th>", html_escape(spec->title));
  }
  html += "</tr></thead><tbody>\n";
  for (const SummaryRow& row : content.rows) {
    const EvaluationPoint& point = content.points[row.point];
    // The tag names the trade-off plots whose Pareto front this point is on.
    std::string fronts;
    for (const TradeoffPlot& plot : content.tradeoffs) {
      if (std::find(plot.front.begin(), plot.front.end(), row.point) == plot.front.end()) continue;
      fronts += std::string(fronts.empty() ? "" : ", ") + (plot.minimize_x ? "size" : "speed");
    }
    const std::string tag =
        fronts.empty() ? "" : fmt::format("<span class=\"tag\">Pareto: {}</span>", fronts);
    html += fmt::format("<tr class=\"{}\"><td class=\"label\">{}<span class=\"origin\">{}{}</span></td><td>{}</td>",
                        point.is_baseline ? "baseline" : (point.status == "failed" ? "failed" : "point"),
                        html_escape(point.label), html_escape(point.origin), tag, badge(point.status));
    for (const MetricCell& cell : row.cells) {
      if (!cell.value) {
        html += "<td class=\"num\"><span class=\"missing\">&mdash;</span></td>";
        continue;
      }
      std::string delta;
      if (cell.delta.percent) {
        delta = fmt::format("<span class=\"delta {}\">{}</span>", verdict_class(cell.delta.verdict),
                            html_escape(format_percent_delta(*cell.delta.percent)));
      }
      html += fmt::format("<td class=\"num\">{}{}</td>", html_escape(cell.text), delta);
    }
    html += "</tr>\n";
  }
  html += "</tbody></table>";
  html += "<p class=\"note\">Deltas are relative to the baseline (the run's first evaluate "
          "stage); green is better, red is worse, grey is within noise. Top-1 agreement and KLD "
          "compare each model's next-token distribution with the baseline's.</p>";
  return html + "</section>\n";
}

std::string scatter_for(const ReportContent& content, const TradeoffPlot& plot) {
  ScatterChart chart;
  chart.title = plot.title;
  chart.x_title = std::string(plot.x_metric->title);
  chart.y_title = std::string(plot.y_metric->title);
  chart.minimize_x = plot.minimize_x;
  chart.minimize_y = true;
  double largest_x = 0;
  for (const size_t i : plot.points) {
    const EvaluationPoint& point = content.points[i];
    ScatterItem item;
    item.label = point.label;
    item.x = *point.metric(std::string(plot.x_metric->key));
    item.y = *point.metric(std::string(plot.y_metric->key));
    item.is_baseline = point.is_baseline;
    item.tooltip = fmt::format("{}: {} {}, {} {}", point.label, plot.y_metric->title,
                               format_value(*plot.y_metric, item.y), plot.x_metric->title,
                               format_value(*plot.x_metric, item.x));
    largest_x = std::max(largest_x, std::fabs(item.x));
    chart.points.push_back(std::move(item));
  }
  chart.x_scale = axis_scale(*plot.x_metric, largest_x);
  chart.y_scale = axis_scale(*plot.y_metric, 0);
  return scatter_svg(chart);
}

std::string charts_section(const ReportContent& content) {
  std::string html = "<section id=\"charts\"><h2>Charts</h2>";
  if (content.columns.empty()) {
    return html + "<p class=\"note\">No metrics to chart.</p></section>\n";
  }
  if (!content.tradeoffs.empty()) {
    html += "<h3>Quality trade-offs</h3><div class=\"charts tradeoffs\">";
    for (const TradeoffPlot& plot : content.tradeoffs) {
      html += "<div class=\"chart-card\">" + scatter_for(content, plot) + "</div>";
    }
    html += "</div><p class=\"note\">Filled points joined by the dashed line form the Pareto "
            "front: no other point has both lower perplexity and a smaller size (or higher "
            "speed). Hover a point for its values.</p>";
  }
  html += "<h3>Metrics by evaluation</h3><div class=\"charts bars\">";
  const EvaluationPoint* baseline = find_baseline(content.points);
  for (size_t column = 0; column < content.columns.size(); ++column) {
    const MetricSpec& spec = *content.columns[column];
    if (spec.better == Better::Neither) continue;  // token counts are not a result to compare
    BarChart chart;
    chart.title = std::string(spec.title);
    double largest = 0;
    for (const SummaryRow& row : content.rows) {
      const MetricCell& cell = row.cells[column];
      if (!cell.value) continue;
      const EvaluationPoint& point = content.points[row.point];
      BarItem bar;
      bar.label = point.label;
      bar.value = *cell.value;
      bar.value_text = cell.text;
      if (cell.delta.percent) bar.value_text += " (" + format_percent_delta(*cell.delta.percent) + ")";
      bar.verdict = cell.delta.verdict;
      bar.is_baseline = point.is_baseline;
      largest = std::max(largest, std::fabs(bar.value));
      chart.bars.push_back(std::move(bar));
    }
    if (baseline) chart.baseline_value = baseline->metric(std::string(spec.key));
    chart.scale = axis_scale(spec, largest);
    html += "<div class=\"chart-card\">" + bar_chart_svg(chart) + "</div>";
  }
  return html + "</div></section>\n";
}

std::string stage_table(const std::string& run_dir, const std::vector<StageRecord>& stages) {
  if (stages.empty()) return "<p class=\"note\">No stages recorded.</p>";
  double longest = 0;
  for (const auto& stage : stages) longest = std::max(longest, stage.wall_s.value_or(0));
  std::string html =
      "<table class=\"timeline\"><thead><tr><th>#</th><th>Stage</th><th>Type</th><th>Status</th>"
      "<th class=\"num\">Wall time</th><th class=\"num\">Peak RSS</th><th>Metrics</th>"
      "<th>Artifacts</th></tr></thead><tbody>\n";
  for (const auto& stage : stages) {
    const bool failed = stage.status == "failed" || !stage.error.empty();
    std::string wall = "<span class=\"missing\">&mdash;</span>";
    if (stage.wall_s) {
      const double share = longest > 0 ? *stage.wall_s / longest * 100 : 0;
      wall = fmt::format("{}<div class=\"timebar\" style=\"width:{:.0f}%\"></div>",
                         html_escape(format_duration(*stage.wall_s)), share);
    }
    std::string artifacts;
    for (const auto& artifact : stage.artifacts) {
      artifacts += (artifacts.empty() ? "" : "<br>") + artifact_html(run_dir, artifact);
    }
    html += fmt::format(
        "<tr class=\"{}\"><td class=\"num\">{}</td><td class=\"label\">{}</td><td>{}</td><td>{}</td>"
        "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"small\">{}</td>"
        "<td class=\"small\">{}</td></tr>\n",
        failed ? "failed" : "stage", stage.index, html_escape(stage.name), html_escape(stage.type),
        badge(stage.status), wall,
        stage.peak_rss_bytes ? html_escape(format_bytes(*stage.peak_rss_bytes))
                             : "<span class=\"missing\">&mdash;</span>",
        html_escape(stage_metrics_text(stage)), artifacts);
    if (!stage.error.empty()) {
      html += fmt::format("<tr class=\"error-row\"><td></td><td colspan=\"7\"><pre class=\"error\">{}</pre></td></tr>\n",
                          html_escape(stage.error));
    }
  }
  return html + "</tbody></table>";
}

std::string overrides_text(const json& overrides) {
  std::string text;
  for (const auto& [key, value] : overrides.items()) {
    text += fmt::format("{}{}={}", text.empty() ? "" : " ", key, json_scalar_text(value));
  }
  return text;
}

std::string timeline_section(const RunRecord& run) {
  std::string html = fmt::format("<section id=\"timeline\"><h2>{}</h2>",
                                 run.is_sweep ? "Stages (shared baseline)" : "Stages");
  html += stage_table(run.dir, run.stages);
  html += "</section>\n";
  if (!run.is_sweep) return html;
  html += fmt::format("<section id=\"sweep\"><h2>Sweep: {} points</h2>", run.sweep.size());
  for (const auto& point : run.sweep) {
    const bool open = point.status != "ok";
    html += fmt::format("<details{}><summary>{}{}</summary>", open ? " open" : "",
                        html_escape(point.name), badge(point.status));
    html += fmt::format("<p class=\"note\">Directory <code>{}</code>; overrides <code>{}</code></p>",
                        html_escape(point.dir), html_escape(overrides_text(point.overrides)));
    const std::string sub_dir =
        run.dir.empty() || !linkable(point.dir) ? "" : (std::filesystem::path(run.dir) / point.dir).string();
    html += stage_table(sub_dir, point.stages);
    html += "</details>";
  }
  return html + "</section>\n";
}

// The navigation bar: a link to every <section id="..."> of `body`, in page order, so that a
// section added to the report (tasks, training, benchmark, ...) is reachable without a second list
// to keep in step. The label is a short name for the fixed sections and the section's <h2> text
// (already escaped) for the per-stage ones ("Training: ft", "Benchmark: bench").
std::string section_nav(const std::string& body) {
  static const std::map<std::string, std::string> kShort = {
      {"summary", "Summary"}, {"charts", "Charts"}, {"tasks", "Tasks"},   {"timeline", "Stages"},
      {"sweep", "Sweep"},     {"recipe", "Recipe"}, {"manifest", "Manifest"}};
  std::string nav = "<nav>";
  for (size_t pos = body.find("<section"); pos != std::string::npos; pos = body.find("<section", pos + 1)) {
    const size_t close = body.find('>', pos);
    if (close == std::string::npos) break;
    const std::string tag = body.substr(pos, close - pos);
    const size_t id_at = tag.find(" id=\"");
    if (id_at == std::string::npos) continue;
    const size_t id_end = tag.find('"', id_at + 5);
    if (id_end == std::string::npos) continue;
    const std::string id = tag.substr(id_at + 5, id_end - id_at - 5);  // attribute text, already escaped
    std::string label = id;
    if (const auto it = kShort.find(id); it != kShort.end()) {
      label = it->second;
    } else if (body.compare(close + 1, 4, "<h2>") == 0) {
      const size_t h2_end = body.find("</h2>", close + 5);
      if (h2_end != std::string::npos) label = body.substr(close + 5, h2_end - close - 5);
    }
    nav += fmt::format("<a href=\"#{}\">{}</a>", id, label);
  }
  return nav + "</nav>\n";
}

std::string header_html(const RunRecord& run, const ReportContent& content, const std::string& nav) {
  std::string html = fmt::format("<header class=\"run\"><h1>{}</h1>{}</header>\n",
                                 html_escape(run.name), badge(run.status));
  std::string meta;
  const auto item = [&](const std::string& key, const std::string& value) {
    if (value.empty()) return;
    meta += fmt::format("{}{} <b>{}</b>", meta.empty() ? "" : " &middot; ", key, html_escape(value));
  };
  item("started", content.started);
  item("ended", content.ended);
  item("stage time", format_duration(content.stage_seconds));
  item("stages", std::to_string(run.stages.size()));
  if (run.is_sweep) item("sweep points", std::to_string(run.sweep.size()));
  item("directory", run.dir);
  html += "<div class=\"meta\">" + meta + "</div>\n";
  html += nav;
  if (!content.errors.empty() || (run.status != "ok")) {
    html += fmt::format("<div class=\"alert\" id=\"errors\"><h2>Run {}</h2>",
                        html_escape(run.status));
    if (content.errors.empty()) {
      html += "<pre>No stage reported an error.</pre>";
    }
    for (const auto& error : content.errors) {
      html += "<pre>" + html_escape(error) + "</pre>";
    }
    html += "</div>\n";
  }
  return html;
}

}  // namespace

std::string report_style() {
  return std::string(kStyle) +
         ".task-table td{vertical-align:top}.task-delta{font-size:.85em;color:var(--muted)}"
         ".task-delta.significant.good{color:var(--good);font-weight:600}"
         ".task-delta.significant.bad{color:var(--bad);font-weight:600}"
         "details.task-drill{margin:.5em 0}details.task-drill summary{cursor:pointer;font-weight:600}";
}

std::string render_html(const RunRecord& run) {
  const ReportContent content = build_report_content(run);
  std::string html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  html += fmt::format("<title>llmopt report: {}</title>\n<style>{}</style></head>\n<body><main>\n",
                      html_escape(run.name), report_style());
  std::string body = summary_section(content);
  body += charts_section(content);
  body += task_section_html(content.points);
  body += training_section_html(run);
  body += benchmark_section_html(run);
  body += timeline_section(run);
  body += "<section id=\"recipe\"><h2>Resolved recipe</h2>";
  body += run.config_yaml
              ? "<pre class=\"recipe\">" + html_escape(*run.config_yaml) + "</pre>"
              : std::string("<p class=\"note\">config.resolved.yaml was not found in the run directory.</p>");
  body += "</section>\n<section id=\"manifest\"><h2>Manifest</h2>";
  body += run.manifest.is_null()
              ? std::string("<p class=\"note\">manifest.json was not found in the run directory.</p>")
              : json_html(run.manifest, 0);
  body += "</section>\n";
  html += header_html(run, content, section_nav(body));
  html += body;
  html += "<footer>Generated by llmopt from metrics.json, manifest.json and "
          "config.resolved.yaml.</footer>\n</main>\n";
  // The only script: a marker that the page's script ran without error (the browser test
  // checks for it in the rendered DOM).
  html += "<script>document.documentElement.setAttribute('data-report-script', 'ok');</script>\n";
  html += "</body></html>\n";
  return html;
}

}  // namespace llmopt::pipeline::report
