#include "pipeline/report/benchmark_section.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <iterator>
#include <nlohmann/json.hpp>
#include <tuple>
#include <utility>

#include "pipeline/report/metric_catalog.h"
#include "pipeline/report/svg_chart.h"
#include "pipeline/report/text_escape.h"

namespace llmopt::pipeline::report {
namespace {

struct GridPoint {
  std::string device = "cpu";
  long threads = 0, batch = 0, context = 0;
  std::map<std::string, double> figures;
  std::string label() const { return fmt::format("{} t{} b{} ctx {}", device, threads, batch, context); }
};

// "<figure>@t<T>_b<B>_c<C>" (CPU) and "<figure>@<device>_t<T>_b<B>_c<C>" metrics of one stage,
// grouped by grid point: the CPU's first, then the other devices by name.
std::vector<GridPoint> grid_of(const StageRecord& s) {
  std::map<std::tuple<bool, std::string, long, long, long>, GridPoint> grid;
  for (const auto& [key, value] : s.metrics) {
    const auto at = key.find('@');
    if (at == std::string::npos) continue;
    std::string device = "cpu";
    size_t coords = at + 1;
    if (key.compare(coords, 1, "t") != 0) {
      const auto sep = key.find("_t", coords);
      if (sep == std::string::npos) continue;
      device = key.substr(coords, sep - coords);
      coords = sep + 1;
    }
    long t = 0, b = 0, c = 0;
    if (std::sscanf(key.c_str() + coords, "t%ld_b%ld_c%ld", &t, &b, &c) != 3) continue;
    GridPoint& p = grid[{device != "cpu", device, t, b, c}];
    p.device = device;
    p.threads = t;
    p.batch = b;
    p.context = c;
    p.figures[key.substr(0, at)] = value;
  }
  std::vector<GridPoint> out;
  for (auto& [k, p] : grid) out.push_back(std::move(p));
  return out;
}

// Devices the stage skipped (unavailable_devices: skip): text metrics "skipped@<device>" = reason.
std::vector<std::pair<std::string, std::string>> skipped_of(const StageRecord& s) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [key, text] : s.text_metrics) {
    if (key.rfind("skipped@", 0) != 0) continue;
    const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    out.emplace_back(key.substr(8), j.is_string() ? j.get<std::string>() : text);
  }
  return out;
}

// What the table says for a skipped device: "skipped: no CUDA" for CUDA devices.
std::string skipped_text(const std::string& device) {
  return device.rfind("cuda", 0) == 0 ? "skipped: no CUDA" : "skipped: unavailable";
}

struct Column {
  const char* key;
  const char* title;
};
constexpr Column kColumns[] = {{"pp_tok_s", "Prefill tok/s"},   {"tg_tok_s", "Decode tok/s"},
                               {"ttft_s", "TTFT"},              {"latency_p50_s", "Latency p50"},
                               {"latency_p90_s", "p90"},        {"latency_p99_s", "p99"},
                               {"peak_rss_bytes", "Peak memory"}, {"kv_cache_bytes", "KV cache"}};

std::string cell(const std::string& key, double v) {
  if (key.find("bytes") != std::string::npos) return format_bytes(v);
  if (key.find("tok_s") != std::string::npos) return fmt::format("{:.1f}", v);  // tokens per second
  if (key.size() > 2 && key.compare(key.size() - 2, 2, "_s") == 0) return fmt::format("{:.3f} ms", v * 1e3);
  return fmt::format("{:.1f}", v);
}

}  // namespace

std::string benchmark_section_html(const RunRecord& run) {
  std::string html;
  for (const auto& s : run.stages) {
    if (s.type != "benchmark") continue;
    const auto grid = grid_of(s);
    const auto skipped = skipped_of(s);
    if (grid.empty() && skipped.empty()) continue;
    html += fmt::format("<section class=\"benchmark\" id=\"benchmark-{0}\"><h2>Benchmark: {0}</h2>", html_escape(s.name));
    html += "<table class=\"benchmark-table\"><thead><tr><th>Device</th><th>Threads</th><th>Batch</th><th>Context</th>";
    for (const auto& c : kColumns) html += fmt::format("<th>{}</th>", c.title);
    html += "</tr></thead><tbody>";
    for (const auto& p : grid) {
      html += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>", html_escape(p.device), p.threads, p.batch,
                          p.context);
      for (const auto& c : kColumns) {
        const auto it = p.figures.find(c.key);
        html += "<td>" + (it == p.figures.end() ? std::string("\u2014") : cell(c.key, it->second)) + "</td>";
      }
      html += "</tr>";
    }
    for (const auto& [device, why] : skipped) {
      html += fmt::format("<tr class=\"skipped\"><td>{}</td><td colspan=\"{}\" title=\"{}\">{}</td></tr>",
                          html_escape(device), 3 + std::size(kColumns), html_escape(why), skipped_text(device));
    }
    html += "</tbody></table>";
    if (grid.empty()) {
      html += "</section>\n";
      continue;
    }
    html += "<div class=\"charts bars\">";
    for (const char* key : {"pp_tok_s", "tg_tok_s"}) {
      BarChart chart;
      chart.title = std::string(key) == "pp_tok_s" ? "Prefill tok/s by grid point" : "Decode tok/s by grid point";
      for (const auto& p : grid) {
        const auto it = p.figures.find(key);
        if (it == p.figures.end()) continue;
        BarItem bar;
        bar.label = p.label();
        bar.value = it->second;
        bar.value_text = fmt::format("{:.1f}", it->second);
        chart.bars.push_back(std::move(bar));
      }
      chart.scale = AxisScale{1, "tok/s"};
      html += "<div class=\"chart-card benchmark-chart\">" + bar_chart_svg(chart) + "</div>";
    }
    html += "</div></section>\n";
  }
  return html;
}

std::string benchmark_section_markdown(const RunRecord& run) {
  std::string md;
  for (const auto& s : run.stages) {
    if (s.type != "benchmark") continue;
    const auto grid = grid_of(s);
    const auto skipped = skipped_of(s);
    if (grid.empty() && skipped.empty()) continue;
    md += fmt::format("\n## Benchmark: {}\n\n| Device | Threads | Batch | Context |", markdown_cell(s.name));
    std::string rule = "|---|---:|---:|---:|";
    for (const auto& c : kColumns) {
      md += fmt::format(" {} |", c.title);
      rule += "---:|";
    }
    md += "\n" + rule + "\n";
    for (const auto& p : grid) {
      md += fmt::format("| {} | {} | {} | {} |", markdown_cell(p.device), p.threads, p.batch, p.context);
      for (const auto& c : kColumns) {
        const auto it = p.figures.find(c.key);
        md += " " + (it == p.figures.end() ? std::string("\u2014") : cell(c.key, it->second)) + " |";
      }
      md += "\n";
    }
    for (const auto& [device, why] : skipped) {
      md += fmt::format("| {} | {} ({}) |", markdown_cell(device), skipped_text(device), markdown_cell(why));
      for (size_t i = 1; i < 3 + std::size(kColumns); ++i) md += " |";
      md += "\n";
    }
  }
  return md;
}

}  // namespace llmopt::pipeline::report
