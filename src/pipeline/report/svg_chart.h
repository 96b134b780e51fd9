// Inline SVG charts drawn directly as markup (no script, no external resources): horizontal bar
// charts of one metric across evaluation points, and scatter plots of two metrics with their
// Pareto front. Every text from the run directory is escaped here.
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "pipeline/report/metric_catalog.h"

namespace llmopt::pipeline::report {

// Round tick positions ("nice numbers": 1, 2, 2.5 or 5 times a power of ten) covering [lo, hi]:
// the first tick is <= lo, the last >= hi, about `target_count` ticks in all. A zero-width range
// is widened around its value.
std::vector<double> nice_ticks(double lo, double hi, int target_count);

// Tick label with just enough decimals for the tick spacing `step`.
std::string format_tick(double value, double step);

struct BarItem {
  std::string label;
  double value = 0;  // in metric units (bytes, fraction...), scaled for display by the chart
  std::string value_text;  // printed at the bar's end
  Verdict verdict = Verdict::Unknown;
  bool is_baseline = false;
};

struct BarChart {
  std::string title;
  AxisScale scale;
  std::vector<BarItem> bars;
  std::optional<double> baseline_value;  // draws a dashed reference line, metric units
};

std::string bar_chart_svg(const BarChart& chart);

struct ScatterItem {
  std::string label;
  double x = 0;  // metric units, scaled for display by the chart
  double y = 0;
  bool is_baseline = false;
  std::string tooltip;
};

struct ScatterChart {
  std::string title;
  std::string x_title;  // the unit is appended from the scale
  std::string y_title;
  AxisScale x_scale;
  AxisScale y_scale;
  bool minimize_x = true;
  bool minimize_y = true;
  std::vector<ScatterItem> points;
};

// Points on the Pareto front are filled and joined by a polyline (class "pareto-front"),
// dominated points are hollow, the baseline is a diamond; every point is labelled.
std::string scatter_svg(const ScatterChart& chart);

struct LineSeries {
  std::string name;       // legend text
  std::string css_class;  // added to the series' elements ("train-loss", "val-loss", "lr")
  std::vector<std::pair<double, double>> points;  // (x, y) in display units, x ascending
  bool markers = false;   // a circle per point (class "marker"), e.g. for sparse validation points
  const char* color = "#2563eb";
};

struct LineChart {
  std::string title;
  std::string x_title;
  std::string y_title;
  std::vector<LineSeries> series;
  bool y_from_zero = false;  // include 0 in the y range
};

// Line chart: each series is one polyline (class "series <css_class>", attribute data-points = its
// number of points), optionally with a marker per point; a legend names the series.
std::string line_chart_svg(const LineChart& chart);

}  // namespace llmopt::pipeline::report
