#include "pipeline/report/svg_chart.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "pipeline/report/pareto.h"
#include "pipeline/report/text_escape.h"

namespace llmopt::pipeline::report {
namespace {

// Palette (Tailwind slate/blue/green/red shades): readable on white and in grayscale print.
constexpr const char* kInk = "#0f172a";
constexpr const char* kMuted = "#64748b";
constexpr const char* kGrid = "#e2e8f0";
constexpr const char* kAxis = "#94a3b8";
constexpr const char* kFront = "#2563eb";
constexpr const char* kBetter = "#16a34a";
constexpr const char* kWorse = "#dc2626";
constexpr const char* kNeutral = "#60a5fa";
constexpr const char* kBaseline = "#475569";

// Average advance of an 11 px sans-serif glyph, px: used to size label boxes for overlap tests.
constexpr double kCharWidthPx = 6.2;
constexpr double kLabelHeightPx = 13;

std::string axis_title(const std::string& title, const AxisScale& scale) {
  // "Generation tok/s" already names its unit.
  if (scale.unit.empty() || title.find(scale.unit) != std::string::npos) return title;
  return fmt::format("{} ({})", title, scale.unit);
}

std::string truncate_label(const std::string& label, size_t max_chars) {
  if (label.size() <= max_chars) return label;
  return label.substr(0, max_chars - 1) + "\u2026";
}

const char* verdict_color(Verdict verdict, bool is_baseline) {
  if (is_baseline) return kBaseline;
  switch (verdict) {
    case Verdict::Better: return kBetter;
    case Verdict::Worse: return kWorse;
    default: return kNeutral;
  }
}

// Maps a data interval onto a pixel interval.
struct LinearMap {
  double d0, d1, p0, p1;
  double operator()(double v) const { return p0 + (v - d0) / (d1 - d0) * (p1 - p0); }
};

struct Box {
  double x0, y0, x1, y1;
  bool overlaps(const Box& o) const { return x0 < o.x1 && o.x0 < x1 && y0 < o.y1 && o.y0 < y1; }
};

// Grid lines with tick labels on both axes and the plot frame (scatter and line charts).
template <class X, class Y>
void append_grid(std::string& svg, const std::vector<double>& xticks, const std::vector<double>& yticks, X x, Y y,
                 double xstep, double ystep, double plot_x0, double plot_y0, double plot_x1, double plot_y1) {
  for (const double tick : xticks) {
    svg += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"{3}\"/>"
        "<text x=\"{0:.1f}\" y=\"{4:.1f}\" font-size=\"10\" text-anchor=\"middle\" "
        "fill=\"{5}\">{6}</text>\n",
        x(tick), plot_y0, plot_y1 + 4, kGrid, plot_y1 + 17, kMuted, format_tick(tick, xstep));
  }
  for (const double tick : yticks) {
    svg += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{2:.1f}\" y2=\"{1:.1f}\" stroke=\"{3}\"/>"
        "<text x=\"{4:.1f}\" y=\"{5:.1f}\" font-size=\"10\" text-anchor=\"end\" "
        "fill=\"{6}\">{7}</text>\n",
        plot_x0 - 4, y(tick), plot_x1, kGrid, plot_x0 - 7, y(tick) + 3.5, kMuted,
        format_tick(tick, ystep));
  }
  svg += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" "
                     "fill=\"none\" stroke=\"{}\"/>\n",
                     plot_x0, plot_y0, plot_x1 - plot_x0, plot_y1 - plot_y0, kAxis);
}

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int target_count) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {0, 1};
  if (lo > hi) std::swap(lo, hi);
  if (hi - lo <= std::fabs(hi) * 1e-12) {
    const double pad = lo == 0 ? 1.0 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double rough_step = (hi - lo) / std::max(1, target_count - 1);
  const double magnitude = std::pow(10.0, std::floor(std::log10(rough_step)));
  const double fraction = rough_step / magnitude;
  double nice_fraction = 10;
  for (const double candidate : {1.0, 2.0, 2.5, 5.0}) {
    if (fraction <= candidate) {
      nice_fraction = candidate;
      break;
    }
  }
  const double step = nice_fraction * magnitude;
  const double first = std::floor(lo / step + 1e-9) * step;
  std::vector<double> ticks;
  for (int i = 0; i < 1000; ++i) {
    const double tick = first + i * step;
    ticks.push_back(std::fabs(tick) < step * 1e-9 ? 0.0 : tick);
    if (tick >= hi - step * 1e-9) break;
  }
  return ticks;
}

std::string format_tick(double value, double step) {
  // The fewest decimals that print the step exactly (25 -> 0, 2.5 -> 1, 0.25 -> 2), so that
  // neighbouring ticks always differ.
  int decimals = 0;
  if (step > 0 && std::isfinite(step)) {
    while (decimals < 9) {
      const double scaled = step * std::pow(10.0, decimals);
      if (std::fabs(scaled - std::round(scaled)) < 1e-6 * std::max(1.0, scaled)) break;
      ++decimals;
    }
  }
  if (std::fabs(value) >= 1e6 && decimals == 0) return fmt::format("{:.3g}", value);
  return fmt::format("{:.{}f}", value, decimals);
}

std::string bar_chart_svg(const BarChart& chart) {
  constexpr double kWidth = 400, kLabelColumn = 138, kValueColumn = 118, kTop = 34, kRow = 24,
                   kBarHeight = 16, kAxisBand = 38;
  const double height = kTop + kRow * static_cast<double>(chart.bars.size()) + kAxisBand;
  const double plot_x0 = kLabelColumn + 6, plot_x1 = kWidth - kValueColumn;
  const double plot_y1 = kTop + kRow * static_cast<double>(chart.bars.size());

  double lo = 0, hi = 0;
  for (const auto& bar : chart.bars) {
    lo = std::min(lo, bar.value / chart.scale.divisor);
    hi = std::max(hi, bar.value / chart.scale.divisor);
  }
  const std::vector<double> ticks = nice_ticks(lo, hi, 5);
  const double step = ticks.size() > 1 ? ticks[1] - ticks[0] : 1;
  const LinearMap x{ticks.front(), ticks.back(), plot_x0, plot_x1};

  std::string svg = fmt::format(
      "<svg class=\"chart bar-chart\" viewBox=\"0 0 {0:.0f} {1:.0f}\" width=\"{0:.0f}\" "
      "height=\"{1:.0f}\" role=\"img\" aria-label=\"{2}\" font-family=\"system-ui, sans-serif\">\n",
      kWidth, height, html_escape(chart.title));
  svg += fmt::format("<text x=\"4\" y=\"18\" font-size=\"14\" font-weight=\"600\" fill=\"{}\">{}</text>\n",
                     kInk, html_escape(axis_title(chart.title, chart.scale)));
  for (const double tick : ticks) {
    const double px = x(tick);
    svg += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"{3}\"/>"
        "<text x=\"{0:.1f}\" y=\"{4:.1f}\" font-size=\"10\" text-anchor=\"middle\" "
        "fill=\"{5}\">{6}</text>\n",
        px, kTop - 4, plot_y1 + 2, kGrid, plot_y1 + 15, kMuted, format_tick(tick, step));
  }
  svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" "
                     "stroke=\"{3}\"/>\n",
                     x(0), kTop - 4, plot_y1 + 2, kAxis);
  if (chart.baseline_value) {
    const double px = x(*chart.baseline_value / chart.scale.divisor);
    svg += fmt::format("<line class=\"baseline-line\" x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" "
                       "y2=\"{2:.1f}\" stroke=\"{3}\" stroke-dasharray=\"4 3\"/>\n",
                       px, kTop - 4, plot_y1 + 2, kInk);
  }
  for (size_t i = 0; i < chart.bars.size(); ++i) {
    const BarItem& bar = chart.bars[i];
    const double y = kTop + kRow * static_cast<double>(i) + (kRow - kBarHeight) / 2;
    const double v = bar.value / chart.scale.divisor;
    const double bx0 = std::min(x(0), x(v)), bx1 = std::max(x(0), x(v));
    svg += fmt::format(
        "<g class=\"bar{}\"><title>{}: {}</title>"
        "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"end\" fill=\"{}\"{}>{}</text>"
        "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" rx=\"2\" fill=\"{}\"/>"
        "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" fill=\"{}\" stroke=\"white\" "
        "stroke-width=\"3\" paint-order=\"stroke\">{}</text></g>\n",
        bar.is_baseline ? " baseline" : "", html_escape(bar.label), html_escape(bar.value_text),
        kLabelColumn, y + kBarHeight - 4, kInk, bar.is_baseline ? " font-weight=\"600\"" : "",
        html_escape(truncate_label(bar.label, 21)), bx0, y, std::max(1.0, bx1 - bx0), kBarHeight,
        verdict_color(bar.verdict, bar.is_baseline), bx1 + 4, y + kBarHeight - 4, kInk,
        html_escape(bar.value_text));
  }
  svg += "</svg>\n";
  return svg;
}

std::string scatter_svg(const ScatterChart& chart) {
  constexpr double kWidth = 620, kHeight = 420, kLeft = 72, kRight = 24, kTop = 46, kBottom = 54;
  const double plot_x0 = kLeft, plot_x1 = kWidth - kRight, plot_y0 = kTop,
               plot_y1 = kHeight - kBottom;

  std::vector<Objective2D> scaled;
  for (const auto& point : chart.points) {
    scaled.push_back({point.x / chart.x_scale.divisor, point.y / chart.y_scale.divisor});
  }
  double xlo = 0, xhi = 1, ylo = 0, yhi = 1;
  if (!scaled.empty()) {
    xlo = xhi = scaled[0].x;
    ylo = yhi = scaled[0].y;
    for (const auto& p : scaled) {
      xlo = std::min(xlo, p.x), xhi = std::max(xhi, p.x);
      ylo = std::min(ylo, p.y), yhi = std::max(yhi, p.y);
    }
    // 6 % padding keeps markers and their labels off the frame.
    const double xpad = (xhi - xlo) * 0.06, ypad = (yhi - ylo) * 0.06;
    xlo -= xpad, xhi += xpad, ylo -= ypad, yhi += ypad;
  }
  const std::vector<double> xticks = nice_ticks(xlo, xhi, 6);
  const std::vector<double> yticks = nice_ticks(ylo, yhi, 6);
  const double xstep = xticks.size() > 1 ? xticks[1] - xticks[0] : 1;
  const double ystep = yticks.size() > 1 ? yticks[1] - yticks[0] : 1;
  const LinearMap x{xticks.front(), xticks.back(), plot_x0, plot_x1};
  const LinearMap y{yticks.front(), yticks.back(), plot_y1, plot_y0};

  std::string svg = fmt::format(
      "<svg class=\"chart scatter-chart\" viewBox=\"0 0 {0:.0f} {1:.0f}\" width=\"{0:.0f}\" "
      "height=\"{1:.0f}\" role=\"img\" aria-label=\"{2}\" font-family=\"system-ui, sans-serif\">\n",
      kWidth, kHeight, html_escape(chart.title));
  svg += fmt::format("<text x=\"4\" y=\"18\" font-size=\"14\" font-weight=\"600\" fill=\"{}\">{}</text>\n",
                     kInk, html_escape(chart.title));
  // Legend, top right.
  svg += fmt::format(
      "<g class=\"legend\" font-size=\"11\" fill=\"{0}\">"
      "<circle cx=\"{1:.0f}\" cy=\"32\" r=\"5\" fill=\"{2}\"/><text x=\"{3:.0f}\" y=\"36\">Pareto front</text>"
      "<circle cx=\"{4:.0f}\" cy=\"32\" r=\"5\" fill=\"white\" stroke=\"{5}\" stroke-width=\"1.5\"/>"
      "<text x=\"{6:.0f}\" y=\"36\">dominated</text>"
      "<path d=\"M{7:.0f} 26 l6 6 l-6 6 l-6 -6 z\" fill=\"{8}\"/><text x=\"{9:.0f}\" y=\"36\">baseline</text>"
      "</g>\n",
      kMuted, plot_x1 - 262, kFront, plot_x1 - 254, plot_x1 - 166, kAxis, plot_x1 - 158,
      plot_x1 - 82, kBaseline, plot_x1 - 72);
  // Grid, ticks and axis titles.
  append_grid(svg, xticks, yticks, x, y, xstep, ystep, plot_x0, plot_y0, plot_x1, plot_y1);
  svg += fmt::format("<text class=\"x-title\" x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"12\" "
                     "text-anchor=\"middle\" fill=\"{}\">{}</text>\n",
                     (plot_x0 + plot_x1) / 2, kHeight - 12, kInk,
                     html_escape(axis_title(chart.x_title, chart.x_scale)));
  svg += fmt::format("<text class=\"y-title\" transform=\"translate(16 {:.1f}) rotate(-90)\" "
                     "font-size=\"12\" text-anchor=\"middle\" fill=\"{}\">{}</text>\n",
                     (plot_y0 + plot_y1) / 2, kInk,
                     html_escape(axis_title(chart.y_title, chart.y_scale)));
  // Which corner is better, so the reader need not work it out from the axis titles.
  const bool better_left = chart.minimize_x, better_bottom = chart.minimize_y;
  svg += fmt::format("<text class=\"better-hint\" x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" "
                     "font-style=\"italic\" text-anchor=\"{}\" fill=\"{}\">{}better</text>\n",
                     better_left ? plot_x0 + 6 : plot_x1 - 6,
                     better_bottom ? plot_y1 - 6 : plot_y0 + 14, better_left ? "start" : "end",
                     kBetter,
                     better_bottom ? (better_left ? "\u2199 " : "\u2198 ")
                                   : (better_left ? "\u2196 " : "\u2197 "));

  const std::vector<size_t> front = pareto_front(scaled, chart.minimize_x, chart.minimize_y);
  std::vector<bool> on_front(scaled.size(), false);
  for (const size_t i : front) on_front[i] = true;
  if (!front.empty()) {
    std::string coords;
    for (const size_t i : front) {
      coords += fmt::format("{}{:.1f},{:.1f}", coords.empty() ? "" : " ", x(scaled[i].x),
                            y(scaled[i].y));
    }
    svg += fmt::format("<polyline class=\"pareto-front\" points=\"{}\" fill=\"none\" "
                       "stroke=\"{}\" stroke-width=\"2\" stroke-dasharray=\"6 4\" "
                       "stroke-opacity=\"0.7\"/>\n",
                       coords, kFront);
  }

  // Markers first, so that labels can avoid them.
  std::vector<Box> occupied;
  for (size_t i = 0; i < scaled.size(); ++i) {
    const double px = x(scaled[i].x), py = y(scaled[i].y);
    occupied.push_back({px - 6, py - 6, px + 6, py + 6});
    const ScatterItem& item = chart.points[i];
    const std::string tooltip =
        fmt::format("<title>{}</title>", html_escape(item.tooltip.empty() ? item.label : item.tooltip));
    if (item.is_baseline) {
      svg += fmt::format("<path class=\"point baseline{}\" d=\"M{:.1f} {:.1f} l7 7 l-7 7 l-7 -7 z\" "
                         "fill=\"{}\" stroke=\"white\">{}</path>\n",
                         on_front[i] ? " front" : "", px, py - 7, kBaseline, tooltip);
    } else if (on_front[i]) {
      svg += fmt::format("<circle class=\"point front\" cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"5.5\" "
                         "fill=\"{}\" stroke=\"white\">{}</circle>\n",
                         px, py, kFront, tooltip);
    } else {
      svg += fmt::format("<circle class=\"point dominated\" cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"5\" "
                         "fill=\"white\" stroke=\"{}\" stroke-width=\"1.5\">{}</circle>\n",
                         px, py, kAxis, tooltip);
    }
  }
  // Labels: try positions around each marker (right, left, above, below, then further out) and
  // keep the first that overlaps neither a marker nor an earlier label and stays in the plot.
  std::vector<size_t> order(scaled.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return y(scaled[a].y) < y(scaled[b].y); });
  for (const size_t i : order) {
    const double px = x(scaled[i].x), py = y(scaled[i].y);
    const std::string text = truncate_label(chart.points[i].label, 28);
    const double w = kCharWidthPx * static_cast<double>(text.size()), h = kLabelHeightPx;
    struct Candidate {
      double x0, y0;  // top-left of the label box
    };
    std::vector<Candidate> candidates;
    for (const double shift : {0.0, 1.0, -1.0, 2.0, -2.0}) {
      candidates.push_back({px + 9, py - h / 2 + shift * h});
      candidates.push_back({px - 9 - w, py - h / 2 + shift * h});
    }
    candidates.push_back({px - w / 2, py - 10 - h});
    candidates.push_back({px - w / 2, py + 10});
    Box chosen{};
    bool placed = false;
    for (const auto& c : candidates) {
      const Box box{c.x0, c.y0, c.x0 + w, c.y0 + h};
      if (box.x0 < plot_x0 + 2 || box.x1 > plot_x1 - 2 || box.y0 < plot_y0 + 2 ||
          box.y1 > plot_y1 - 2) {
        continue;
      }
      if (std::any_of(occupied.begin(), occupied.end(), [&](const Box& o) { return o.overlaps(box); })) {
        continue;
      }
      chosen = box;
      placed = true;
      break;
    }
    if (!placed) {
      // Crowded: fall back to the right side (or left near the right edge), overlap accepted.
      const double x0 = px + 9 + w > plot_x1 ? px - 9 - w : px + 9;
      chosen = {x0, py - h / 2, x0 + w, py + h / 2};
    }
    occupied.push_back(chosen);
    svg += fmt::format("<text class=\"point-label\" x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" "
                       "fill=\"{}\"{}>{}</text>\n",
                       chosen.x0, chosen.y1 - 3, kInk,
                       chart.points[i].is_baseline ? " font-weight=\"600\"" : "", html_escape(text));
  }
  svg += "</svg>\n";
  return svg;
}

std::string line_chart_svg(const LineChart& chart) {
  constexpr double kWidth = 470, kHeight = 300, kLeft = 78, kRight = 16, kTop = 46, kBottom = 48;
  const double plot_x0 = kLeft, plot_x1 = kWidth - kRight, plot_y0 = kTop, plot_y1 = kHeight - kBottom;

  bool any = false;
  double xlo = 0, xhi = 1, ylo = 0, yhi = 1;
  for (const auto& series : chart.series) {
    for (const auto& [px, py] : series.points) {
      if (!std::isfinite(px) || !std::isfinite(py)) continue;
      if (!any) xlo = xhi = px, ylo = yhi = py, any = true;
      xlo = std::min(xlo, px), xhi = std::max(xhi, px);
      ylo = std::min(ylo, py), yhi = std::max(yhi, py);
    }
  }
  if (chart.y_from_zero) ylo = std::min(ylo, 0.0), yhi = std::max(yhi, 0.0);
  const std::vector<double> xticks = nice_ticks(xlo, xhi, 6);
  const std::vector<double> yticks = nice_ticks(ylo, yhi, 5);
  const double xstep = xticks.size() > 1 ? xticks[1] - xticks[0] : 1;
  const double ystep = yticks.size() > 1 ? yticks[1] - yticks[0] : 1;
  const LinearMap x{xticks.front(), xticks.back(), plot_x0, plot_x1};
  const LinearMap y{yticks.front(), yticks.back(), plot_y1, plot_y0};

  std::string svg = fmt::format(
      "<svg class=\"chart line-chart\" viewBox=\"0 0 {0:.0f} {1:.0f}\" width=\"{0:.0f}\" "
      "height=\"{1:.0f}\" role=\"img\" aria-label=\"{2}\" font-family=\"system-ui, sans-serif\">\n",
      kWidth, kHeight, html_escape(chart.title));
  svg += fmt::format("<text x=\"4\" y=\"18\" font-size=\"14\" font-weight=\"600\" fill=\"{}\">{}</text>\n",
                     kInk, html_escape(chart.title));
  // Legend, one entry per series, left to right under the title.
  double legend_x = plot_x0;
  svg += fmt::format("<g class=\"legend\" font-size=\"11\" fill=\"{}\">", kMuted);
  for (const auto& series : chart.series) {
    svg += fmt::format("<line x1=\"{0:.0f}\" y1=\"32\" x2=\"{1:.0f}\" y2=\"32\" stroke=\"{2}\" "
                       "stroke-width=\"2\"/><text x=\"{3:.0f}\" y=\"36\">{4}</text>",
                       legend_x, legend_x + 16, series.color, legend_x + 20, html_escape(series.name));
    legend_x += 32 + kCharWidthPx * static_cast<double>(series.name.size());
  }
  svg += "</g>\n";
  append_grid(svg, xticks, yticks, x, y, xstep, ystep, plot_x0, plot_y0, plot_x1, plot_y1);
  svg += fmt::format("<text class=\"x-title\" x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"12\" "
                     "text-anchor=\"middle\" fill=\"{}\">{}</text>\n",
                     (plot_x0 + plot_x1) / 2, kHeight - 10, kInk, html_escape(chart.x_title));
  svg += fmt::format("<text class=\"y-title\" transform=\"translate(14 {:.1f}) rotate(-90)\" "
                     "font-size=\"12\" text-anchor=\"middle\" fill=\"{}\">{}</text>\n",
                     (plot_y0 + plot_y1) / 2, kInk, html_escape(chart.y_title));
  for (const auto& series : chart.series) {
    std::string coords;
    size_t n = 0;
    for (const auto& [px, py] : series.points) {
      if (!std::isfinite(px) || !std::isfinite(py)) continue;
      coords += fmt::format("{}{:.1f},{:.1f}", coords.empty() ? "" : " ", x(px), y(py));
      ++n;
    }
    svg += fmt::format("<polyline class=\"series {}\" data-points=\"{}\" points=\"{}\" fill=\"none\" "
                       "stroke=\"{}\" stroke-width=\"1.5\" stroke-linejoin=\"round\"/>\n",
                       html_escape(series.css_class), n, coords, series.color);
    if (!series.markers) continue;
    for (const auto& [px, py] : series.points) {
      if (!std::isfinite(px) || !std::isfinite(py)) continue;
      svg += fmt::format("<circle class=\"marker {}\" cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3.5\" fill=\"{}\" "
                         "stroke=\"white\"><title>{}: {} at {}</title></circle>\n",
                         html_escape(series.css_class), x(px), y(py), series.color,
                         html_escape(series.name), fmt::format("{:.4g}", py), fmt::format("{:g}", px));
    }
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace llmopt::pipeline::report
