// The metrics a report knows how to present: title, unit, which direction is better, how to
// print a value and how to judge a change against the baseline.
#pragma once
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace llmopt::pipeline::report {

enum class Better { Lower, Higher, Neither };

// How values of a metric are printed and scaled on chart axes.
enum class ValueKind {
  Real,      // printed with `decimals` digits after the point
  Count,     // integer
  Bytes,     // IEC units (KiB, MiB, GiB)
  Fraction,  // stored in [0, 1], shown as percent
};

struct MetricSpec {
  std::string_view key;    // snake_case key in metrics.json
  std::string_view title;  // column / chart title
  std::string_view unit;   // shown on axes and in headers ("" when unitless)
  Better better;
  ValueKind kind;
  int decimals;
  // A relative change smaller than this (percent) is shown as neutral rather than good/bad: the
  // timing metrics get a wider band because repeated runs of the same model differ by ~1-2 %.
  double neutral_band_pct;
};

// Metrics of the summary table and charts, in column order: perplexity, KLD mean/p99, top-1
// agreement, model size, prompt/generation speed, peak memory.
std::span<const MetricSpec> summary_metrics();

// Any catalog metric (the summary ones, nll_mean, tokens); nullptr when unknown.
const MetricSpec* find_metric(std::string_view key);

// "12.346", "1.50 MiB", "93.41 %", "1 024"...
std::string format_value(const MetricSpec& spec, double value);

// Generic number for metrics not in the catalog: up to 6 significant digits.
std::string format_number(double value);

// 1536 -> "1.50 KiB"; below 1 KiB in bytes.
std::string format_bytes(double bytes);

// 0.42 -> "0.42 s", 75 -> "1 min 15 s", 4000 -> "1 h 06 min".
std::string format_duration(double seconds);

// Axis scale for a metric: values are divided by `divisor` and labelled with `unit` (bytes pick
// KiB/MiB/GiB from the largest value, fractions become percent).
struct AxisScale {
  double divisor = 1;
  std::string unit;
};
AxisScale axis_scale(const MetricSpec& spec, double largest_value);

// Change of `value` relative to `baseline`, judged by the metric's direction.
enum class Verdict { Better, Worse, Neutral, Unknown };
struct Delta {
  // Absent when the baseline is 0 or missing, or the metric has no better direction (tokens).
  std::optional<double> percent;
  Verdict verdict = Verdict::Unknown;
};
Delta delta_vs_baseline(const MetricSpec& spec, std::optional<double> value,
                        std::optional<double> baseline);

// "+1.23 %", "-0.40 %", "±0.00 %".
std::string format_percent_delta(double percent);

}  // namespace llmopt::pipeline::report
