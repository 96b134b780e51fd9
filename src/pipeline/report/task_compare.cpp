#include "pipeline/report/task_compare.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "core/error.h"
#include "pipeline/report/metric_catalog.h"
#include "pipeline/report/run_record.h"
#include "pipeline/report/svg_chart.h"
#include "pipeline/report/text_escape.h"

namespace llmopt::pipeline::report {
namespace {

constexpr double kZ95 = 1.96;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool lower_is_better(const std::string& metric) {
  return metric.find("perplexity") != std::string::npos || metric.find("bits_per_byte") != std::string::npos;
}

const MetricSpec& quality_spec() {
  static const MetricSpec spec{"mean_task_score", "Mean task score", "%", Better::Higher, ValueKind::Fraction, 2, 0.0};
  return spec;
}

std::string fmt_score(double v) { return std::fabs(v) >= 1000 ? format_number(v) : fmt::format("{:.4f}", v); }

std::string fmt_signed(double v) { return (v >= 0 ? "+" : "\u2212") + fmt_score(std::fabs(v)); }

// One cell: "0.2508 ± 0.0089" and, against a baseline, "Δ +0.0100 ± 0.0125 (n.s.)".
struct Cell {
  std::string value, delta;
  bool has_delta = false, significant = false, better = false;
};

Cell cell_for(const TaskScore& s, const TaskScore* base) {
  Cell c;
  c.value = fmt_score(s.value);
  if (s.stderr_value) c.value += " \u00b1 " + fmt_score(*s.stderr_value);
  if (base) {
    const TaskDelta d = task_delta(s, *base);
    c.has_delta = true;
    c.significant = d.significant;
    c.better = d.better;
    c.delta = fmt_signed(d.delta);
    if (d.stderr_diff) c.delta += " \u00b1 " + fmt_score(*d.stderr_diff);
    c.delta += d.significant ? (d.better ? " better" : " worse") : " n.s.";
  }
  return c;
}

// Task keys present in any point, in order.
std::vector<std::string> all_keys(const std::vector<const EvaluationPoint*>& points) {
  std::set<std::string> keys;
  for (const auto* p : points)
    for (const auto& s : task_scores(*p)) keys.insert(s.key);
  return {keys.begin(), keys.end()};
}

const TaskScore* find_score(const std::vector<TaskScore>& scores, const std::string& key) {
  for (const auto& s : scores)
    if (s.key == key) return &s;
  return nullptr;
}

std::optional<double> speed_of(const EvaluationPoint& p, std::string* which) {
  if (auto v = p.metric("tg_tok_s")) {
    *which = "tg_tok_s";
    return v;
  }
  if (auto v = p.metric("pp_tok_s")) {
    *which = "pp_tok_s";
    return v;
  }
  return std::nullopt;
}

// Quality (mean task score) against size and speed, one scatter each, when two points have both.
std::string quality_charts_html(const std::vector<const EvaluationPoint*>& points,
                                const std::vector<std::string>& labels) {
  std::string html;
  for (int chart_kind = 0; chart_kind < 2; ++chart_kind) {
    ScatterChart chart;
    const MetricSpec* x_spec = nullptr;
    double largest_x = 0;
    for (size_t i = 0; i < points.size(); ++i) {
      const auto q = mean_task_score(*points[i]);
      std::optional<double> x;
      std::string which = "model_bytes";
      if (chart_kind == 0) x = points[i]->metric("model_bytes");
      else x = speed_of(*points[i], &which);
      if (!q || !x) continue;
      x_spec = find_metric(which);
      ScatterItem item;
      item.label = labels[i];
      item.x = *x;
      item.y = *q;
      item.is_baseline = points[i]->is_baseline;
      item.tooltip = fmt::format("{}: mean task score {}, {} {}", labels[i], format_value(quality_spec(), *q),
                                 x_spec ? std::string(x_spec->title) : which,
                                 x_spec ? format_value(*x_spec, *x) : format_number(*x));
      largest_x = std::max(largest_x, std::fabs(*x));
      chart.points.push_back(std::move(item));
    }
    if (chart.points.size() < 2 || !x_spec) continue;
    chart.title = chart_kind == 0 ? "Task quality vs model size" : "Task quality vs speed";
    chart.x_title = std::string(x_spec->title);
    chart.y_title = "Mean task score";
    chart.minimize_x = chart_kind == 0;
    chart.minimize_y = false;
    chart.x_scale = axis_scale(*x_spec, largest_x);
    chart.y_scale = axis_scale(quality_spec(), 1);
    html += fmt::format("<div class=\"chart-card task-chart\" data-chart=\"{}\">{}</div>",
                        chart_kind == 0 ? "quality-size" : "quality-speed", scatter_svg(chart));
  }
  return html;
}

std::string comparison_table_html(const std::vector<const EvaluationPoint*>& points,
                                  const std::vector<std::string>& labels, const EvaluationPoint* base,
                                  const std::vector<std::string>& keys) {
  std::string html = "<table class=\"task-table\"><thead><tr><th>Task</th><th>Metric</th>";
  for (const auto& l : labels) html += "<th>" + html_escape(l) + "</th>";
  html += "</tr></thead><tbody>";
  const auto base_scores = base ? task_scores(*base) : std::vector<TaskScore>{};
  for (const auto& key : keys) {
    const auto slash = key.find('/');
    html += fmt::format("<tr><td><a href=\"#task-{0}\">{0}</a></td><td>{1}</td>", html_escape(key.substr(0, slash)),
                        html_escape(key.substr(slash + 1)));
    for (const auto* p : points) {
      const auto scores = task_scores(*p);
      const TaskScore* s = find_score(scores, key);
      if (!s) {
        html += "<td>\u2014</td>";
        continue;
      }
      const TaskScore* b = (p == base) ? nullptr : find_score(base_scores, key);
      const Cell c = cell_for(*s, b);
      html += "<td>" + html_escape(c.value);
      if (c.has_delta)
        html += fmt::format("<br><span class=\"task-delta {}\">\u0394 {}</span>",
                            c.significant ? (c.better ? "significant good" : "significant bad") : "ns",
                            html_escape(c.delta));
      html += "</td>";
    }
    html += "</tr>";
  }
  return html + "</tbody></table>";
}

std::string drilldown_html(const std::vector<const EvaluationPoint*>& points, const std::vector<std::string>& labels,
                           const EvaluationPoint* base, const std::vector<std::string>& keys) {
  std::map<std::string, std::vector<std::string>> by_task;
  for (const auto& k : keys) by_task[k.substr(0, k.find('/'))].push_back(k);
  std::string html = "<h3>Per task</h3>";
  for (const auto& [task, task_keys] : by_task) {
    html += fmt::format("<details class=\"task-drill\" id=\"task-{0}\"><summary>{0}</summary>", html_escape(task));
    // Extra facts of the task (documents, chance, shots) from the first point that has them.
    for (const auto* p : points) {
      const auto n = p->metric(task + "/samples");
      if (!n) continue;
      html += fmt::format("<p class=\"note\">{} documents", format_number(*n));
      if (auto c = p->metric(task + "/chance")) html += fmt::format(", chance {:.4f}", *c);
      if (auto k = p->metric(task + "/num_fewshot")) html += fmt::format(", {}-shot", format_number(*k));
      html += ".</p>";
      break;
    }
    html += comparison_table_html(points, labels, base, task_keys);
    // A bar per evaluation for each metric, the baseline as the dashed line.
    html += "<div class=\"charts bars\">";
    for (const auto& key : task_keys) {
      BarChart chart;
      chart.title = key;
      double largest = 0;
      const auto base_scores = base ? task_scores(*base) : std::vector<TaskScore>{};
      const TaskScore* b = find_score(base_scores, key);
      for (size_t i = 0; i < points.size(); ++i) {
        const auto scores = task_scores(*points[i]);
        const TaskScore* s = find_score(scores, key);
        if (!s) continue;
        BarItem bar;
        bar.label = labels[i];
        bar.value = s->value;
        const Cell c = cell_for(*s, points[i] == base ? nullptr : b);
        bar.value_text = c.value;
        bar.verdict = !c.has_delta ? Verdict::Unknown
                      : c.significant ? (c.better ? Verdict::Better : Verdict::Worse)
                                      : Verdict::Neutral;
        bar.is_baseline = points[i]->is_baseline;
        largest = std::max(largest, std::fabs(s->value));
        chart.bars.push_back(std::move(bar));
      }
      if (b) chart.baseline_value = b->value;
      chart.scale = AxisScale{1, ""};
      html += "<div class=\"chart-card\">" + bar_chart_svg(chart) + "</div>";
    }
    html += "</div></details>";
  }
  return html;
}

std::vector<const EvaluationPoint*> with_tasks(const std::vector<EvaluationPoint>& points) {
  std::vector<const EvaluationPoint*> out;
  for (const auto& p : points)
    if (!task_scores(p).empty()) out.push_back(&p);
  return out;
}

std::string markdown_table(const std::vector<const EvaluationPoint*>& points, const std::vector<std::string>& labels,
                           const EvaluationPoint* base, const std::vector<std::string>& keys) {
  std::string md = "| Task | Metric |";
  std::string rule = "|---|---|";
  for (const auto& l : labels) {
    md += " " + markdown_cell(l) + " |";
    rule += "---:|";
  }
  md += "\n" + rule + "\n";
  const auto base_scores = base ? task_scores(*base) : std::vector<TaskScore>{};
  for (const auto& key : keys) {
    const auto slash = key.find('/');
    md += fmt::format("| {} | {} |", markdown_cell(key.substr(0, slash)), markdown_cell(key.substr(slash + 1)));
    for (const auto* p : points) {
      const auto scores = task_scores(*p);
      const TaskScore* s = find_score(scores, key);
      if (!s) {
        md += " \u2014 |";
        continue;
      }
      const Cell c = cell_for(*s, p == base ? nullptr : find_score(base_scores, key));
      md += " " + c.value;
      if (c.has_delta) md += "<br>\u0394 " + c.delta + (c.significant ? " **\u2731**" : "");
      md += " |";
    }
    md += "\n";
  }
  return md;
}

}  // namespace

std::vector<TaskScore> task_scores(const EvaluationPoint& point) {
  static const std::set<std::string> not_scores = {"chance", "samples", "seconds", "num_fewshot"};
  std::vector<TaskScore> out;
  for (const auto& [key, value] : point.metrics) {
    const auto slash = key.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 >= key.size()) continue;
    const std::string metric = key.substr(slash + 1);
    if (not_scores.count(metric) || metric.find("_stderr") != std::string::npos) continue;
    TaskScore s;
    s.key = key;
    s.task = key.substr(0, slash);
    s.metric = metric;
    s.value = value;
    // "exact_match,strict-match" → "exact_match_stderr,strict-match" (the harness's naming).
    const auto comma = metric.find(',');
    const std::string se_key = s.task + "/" + metric.substr(0, comma) + "_stderr" +
                               (comma == std::string::npos ? "" : metric.substr(comma));
    if (auto it = point.metrics.find(se_key); it != point.metrics.end()) s.stderr_value = it->second;
    s.higher_is_better = !lower_is_better(metric);
    out.push_back(std::move(s));
  }
  return out;
}

TaskDelta task_delta(const TaskScore& score, const TaskScore& baseline) {
  TaskDelta d;
  d.delta = score.value - baseline.value;
  if (score.stderr_value && baseline.stderr_value) {
    d.stderr_diff = std::sqrt(*score.stderr_value * *score.stderr_value + *baseline.stderr_value * *baseline.stderr_value);
    d.significant = *d.stderr_diff > 0 ? std::fabs(d.delta) > kZ95 * *d.stderr_diff : d.delta != 0;
  }
  d.better = d.significant && (score.higher_is_better ? d.delta > 0 : d.delta < 0);
  return d;
}

std::optional<double> mean_task_score(const EvaluationPoint& point) {
  double sum = 0;
  int n = 0;
  for (const auto& s : task_scores(point)) {
    if (!s.higher_is_better) continue;
    sum += s.value;
    ++n;
  }
  if (n == 0) return std::nullopt;
  return sum / n;
}

std::string task_section_html(const std::vector<EvaluationPoint>& all) {
  const auto points = with_tasks(all);
  if (points.empty()) return "";
  std::vector<std::string> labels;
  for (const auto* p : points) labels.push_back(p->label);
  const EvaluationPoint* base = nullptr;
  for (const auto* p : points)
    if (p->is_baseline) base = p;
  const auto keys = all_keys(points);
  std::string html = "<section id=\"tasks\"><h2>Tasks</h2>";
  html += "<p class=\"note\">Each task score \u00b1 its standard error; below it the change vs the baseline "
          "\u00b1 the standard error of the difference (\u221a(se\u00b2 + se_base\u00b2)), marked significant "
          "when |\u0394| &gt; 1.96 \u00b7 SE (green better, red worse) and n.s. otherwise.</p>";
  html += comparison_table_html(points, labels, base, keys);
  const std::string charts = quality_charts_html(points, labels);
  if (!charts.empty())
    html += "<h3>Task quality trade-offs</h3><div class=\"charts tradeoffs task-tradeoffs\">" + charts +
            "</div><p class=\"note\">Quality is the mean of the accuracy-type task scores (acc, acc_norm, "
            "exact match, F1, ROUGE-L) of each evaluation.</p>";
  html += drilldown_html(points, labels, base, keys);
  return html + "</section>\n";
}

std::string task_section_markdown(const std::vector<EvaluationPoint>& all) {
  const auto points = with_tasks(all);
  if (points.empty()) return "";
  std::vector<std::string> labels;
  const EvaluationPoint* base = nullptr;
  for (const auto* p : points) {
    labels.push_back(p->label);
    if (p->is_baseline) base = p;
  }
  return "\n## Tasks\n\nScore \u00b1 standard error; \u0394 vs the baseline \u00b1 SE of the difference, "
         "**\u2731** = significant (|\u0394| > 1.96 SE).\n\n" +
         markdown_table(points, labels, base, all_keys(points));
}

std::vector<ComparedPoint> compare_points(const std::vector<std::string>& run_dirs) {
  LLMOPT_CHECK_INPUT(!run_dirs.empty(), "[report] compare: expected at least one run directory");
  std::vector<ComparedPoint> out;
  for (const auto& dir : run_dirs) {
    const RunRecord run = load_run(dir);
    for (auto& p : evaluation_points(run)) out.push_back({run.name, dir, std::move(p)});
  }
  return out;
}

namespace {
std::vector<std::string> compared_labels(const std::vector<ComparedPoint>& points) {
  std::vector<std::string> labels;
  for (const auto& c : points) labels.push_back(c.run + ": " + c.point.label);
  return labels;
}
std::vector<const EvaluationPoint*> compared_ptrs(const std::vector<ComparedPoint>& points) {
  std::vector<const EvaluationPoint*> out;
  for (const auto& c : points) out.push_back(&c.point);
  return out;
}
// The reference: the first run's baseline, or its first evaluation.
const EvaluationPoint* reference_of(const std::vector<ComparedPoint>& points) {
  if (points.empty()) return nullptr;
  for (const auto& c : points)
    if (c.dir == points.front().dir && c.point.is_baseline) return &c.point;
  return &points.front().point;
}
const char* kModelKeys[] = {"perplexity", "kld_mean", "model_bytes", "pp_tok_s", "tg_tok_s", "peak_rss_bytes"};
}  // namespace

std::string compare_runs_markdown(const std::vector<ComparedPoint>& points) {
  const auto labels = compared_labels(points);
  const auto ptrs = compared_ptrs(points);
  const EvaluationPoint* ref = reference_of(points);
  // Models: perplexity, KLD, size, speed, memory with % change vs the reference.
  std::string md = "| Run | Evaluation | Status |";
  std::string rule = "|---|---|---|";
  std::vector<const MetricSpec*> cols;
  for (const char* k : kModelKeys) {
    for (const auto* p : ptrs)
      if (p->metric(k)) {
        cols.push_back(find_metric(k));
        break;
      }
  }
  for (const auto* c : cols) {
    md += " " + markdown_cell(std::string(c->title)) + " |";
    rule += "---:|";
  }
  md += "\n" + rule + "\n";
  for (size_t i = 0; i < points.size(); ++i) {
    const auto& p = points[i].point;
    md += fmt::format("| {} | {} | {} |", markdown_cell(points[i].run), markdown_cell(p.label), markdown_cell(p.status));
    for (const auto* c : cols) {
      const auto v = p.metric(std::string(c->key));
      if (!v) {
        md += " \u2014 |";
        continue;
      }
      std::string cell = format_value(*c, *v);
      if (&p != ref && ref) {
        const Delta d = delta_vs_baseline(*c, v, ref->metric(std::string(c->key)));
        if (d.percent) cell += " (" + format_percent_delta(*d.percent) + ")";
      }
      md += " " + cell + " |";
    }
    md += "\n";
  }
  const auto keys = all_keys(ptrs);
  if (!keys.empty()) {
    md += "\nTask scores \u00b1 standard error; \u0394 vs " + markdown_cell(ref ? labels[0] : "") +
          " (the first run's baseline) \u00b1 SE of the difference, **\u2731** = significant (|\u0394| > 1.96 SE).\n\n";
    md += markdown_table(ptrs, labels, ref, keys);
  }
  return md;
}

nlohmann::json compare_runs_json(const std::vector<ComparedPoint>& points) {
  const EvaluationPoint* ref = reference_of(points);
  const auto ref_scores = ref ? task_scores(*ref) : std::vector<TaskScore>{};
  nlohmann::json out = {{"reference", nullptr}, {"evaluations", nlohmann::json::array()}};
  for (const auto& c : points) {
    if (&c.point == ref) out["reference"] = {{"run", c.run}, {"dir", c.dir}, {"evaluation", c.point.label}};
    nlohmann::json e = {{"run", c.run}, {"dir", c.dir}, {"evaluation", c.point.label}, {"origin", c.point.origin},
                        {"status", c.point.status}, {"is_baseline", c.point.is_baseline}};
    nlohmann::json model = nlohmann::json::object();
    for (const char* k : kModelKeys) {
      if (auto v = c.point.metric(k)) {
        model[k] = *v;
        if (ref && &c.point != ref)
          if (auto r = ref->metric(k)) model[std::string(k) + "_delta"] = *v - *r;
      }
    }
    e["metrics"] = model;
    nlohmann::json tasks = nlohmann::json::object();
    for (const auto& s : task_scores(c.point)) {
      nlohmann::json t = {{"value", s.value}, {"stderr", s.stderr_value ? nlohmann::json(*s.stderr_value) : nlohmann::json()}};
      const TaskScore* b = (&c.point == ref) ? nullptr : find_score(ref_scores, s.key);
      if (b) {
        const TaskDelta d = task_delta(s, *b);
        t["delta"] = d.delta;
        t["delta_stderr"] = d.stderr_diff ? nlohmann::json(*d.stderr_diff) : nlohmann::json();
        t["significant"] = d.significant;
        t["better"] = d.better;
      }
      tasks[s.key] = t;
    }
    e["tasks"] = tasks;
    if (auto q = mean_task_score(c.point)) e["mean_task_score"] = *q;
    out["evaluations"].push_back(std::move(e));
  }
  return out;
}

std::string compare_runs_html(const std::vector<ComparedPoint>& points, const std::string& style) {
  const auto labels = compared_labels(points);
  const auto ptrs = compared_ptrs(points);
  const EvaluationPoint* ref = reference_of(points);
  std::string html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>llmopt compare</title>\n<style>" +
                     style + "</style></head>\n<body><main>\n<h1>llmopt compare</h1>";
  html += "<section id=\"runs\"><h2>Runs</h2><ul>";
  std::set<std::string> seen;
  for (const auto& c : points)
    if (seen.insert(c.dir).second) html += "<li>" + html_escape(c.run) + " <code>" + html_escape(c.dir) + "</code></li>";
  html += "</ul></section>";
  const auto keys = all_keys(ptrs);
  html += "<section id=\"tasks\"><h2>Task scores</h2>";
  if (keys.empty()) html += "<p class=\"note\">No evaluation has task scores.</p>";
  else html += comparison_table_html(ptrs, labels, ref, keys);
  const std::string charts = quality_charts_html(ptrs, labels);
  if (!charts.empty()) html += "<h3>Task quality trade-offs</h3><div class=\"charts tradeoffs task-tradeoffs\">" + charts + "</div>";
  html += "</section>\n<script>document.documentElement.setAttribute('data-report-script', 'ok');</script>\n</body></html>\n";
  return html;
}

}  // namespace llmopt::pipeline::report
