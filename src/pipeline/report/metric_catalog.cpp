#include "pipeline/report/metric_catalog.h"

#include <fmt/format.h>

#include <array>
#include <cmath>

namespace llmopt::pipeline::report {
namespace {

constexpr std::array kSummaryMetrics = {
    MetricSpec{"perplexity", "Perplexity", "", Better::Lower, ValueKind::Real, 3, 0.1},
    MetricSpec{"kld_mean", "KLD mean", "nats", Better::Lower, ValueKind::Real, 5, 1.0},
    MetricSpec{"kld_p99", "KLD p99", "nats", Better::Lower, ValueKind::Real, 5, 1.0},
    MetricSpec{"top1_agreement", "Top-1 agreement", "%", Better::Higher, ValueKind::Fraction, 2,
               0.1},
    MetricSpec{"model_bytes", "Model size", "bytes", Better::Lower, ValueKind::Bytes, 2, 0.1},
    MetricSpec{"pp_tok_s", "Prompt tok/s", "tok/s", Better::Higher, ValueKind::Real, 1, 2.0},
    MetricSpec{"tg_tok_s", "Generation tok/s", "tok/s", Better::Higher, ValueKind::Real, 1, 2.0},
    MetricSpec{"peak_rss_bytes", "Peak memory", "bytes", Better::Lower, ValueKind::Bytes, 2, 1.0},
};

// Known for formatting, but not summary columns: NLL is log(perplexity), tokens is a setting.
constexpr std::array kOtherMetrics = {
    MetricSpec{"nll_mean", "NLL mean", "nats/token", Better::Lower, ValueKind::Real, 4, 0.1},
    MetricSpec{"tokens", "Tokens", "", Better::Neither, ValueKind::Count, 0, 0.0},
};

// Integers with comma thousands separators ("1,048,576"): long counts stay readable.
std::string group_thousands(long long value) {
  std::string digits = std::to_string(value < 0 ? -value : value);
  std::string out;
  const int n = static_cast<int>(digits.size());
  for (int i = 0; i < n; ++i) {
    out += digits[i];
    if ((n - 1 - i) % 3 == 0 && i != n - 1) out += ',';
  }
  return value < 0 ? "-" + out : out;
}

}  // namespace

std::span<const MetricSpec> summary_metrics() { return kSummaryMetrics; }

const MetricSpec* find_metric(std::string_view key) {
  for (const auto& spec : kSummaryMetrics) {
    if (spec.key == key) return &spec;
  }
  for (const auto& spec : kOtherMetrics) {
    if (spec.key == key) return &spec;
  }
  return nullptr;
}

std::string format_number(double value) {
  if (!std::isfinite(value)) return fmt::format("{}", value);
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    return group_thousands(static_cast<long long>(value));
  }
  return fmt::format("{:.6g}", value);
}

std::string format_bytes(double bytes) {
  if (!std::isfinite(bytes)) return fmt::format("{}", bytes);
  static constexpr std::array<const char*, 5> kUnits = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  if (std::fabs(bytes) < 1024) return fmt::format("{:.0f} B", bytes);
  double scaled = bytes;
  size_t unit = 0;
  scaled /= 1024;
  while (std::fabs(scaled) >= 1024 && unit + 1 < kUnits.size()) {
    scaled /= 1024;
    ++unit;
  }
  return fmt::format("{:.2f} {}", scaled, kUnits[unit]);
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds)) return fmt::format("{} s", seconds);
  if (seconds < 10) return fmt::format("{:.2f} s", seconds);
  if (seconds < 60) return fmt::format("{:.1f} s", seconds);
  const long long whole = std::llround(seconds);
  if (whole < 3600) return fmt::format("{} min {:02} s", whole / 60, whole % 60);
  return fmt::format("{} h {:02} min", whole / 3600, (whole % 3600) / 60);
}

std::string format_value(const MetricSpec& spec, double value) {
  if (!std::isfinite(value)) return fmt::format("{}", value);
  switch (spec.kind) {
    case ValueKind::Count: return group_thousands(std::llround(value));
    case ValueKind::Bytes: return format_bytes(value);
    case ValueKind::Fraction: return fmt::format("{:.{}f} %", value * 100, spec.decimals);
    case ValueKind::Real:
      // Small values (KLD of a near-lossless model) keep significant digits instead of 0.00000.
      if (value != 0 && std::fabs(value) < std::pow(10.0, -spec.decimals + 1)) {
        return fmt::format("{:.3g}", value);
      }
      if (std::fabs(value) >= 10000) return group_thousands(std::llround(value));
      return fmt::format("{:.{}f}", value, spec.decimals);
  }
  return format_number(value);
}

AxisScale axis_scale(const MetricSpec& spec, double largest_value) {
  switch (spec.kind) {
    case ValueKind::Bytes: {
      static constexpr std::array<const char*, 5> kUnits = {"B", "KiB", "MiB", "GiB", "TiB"};
      AxisScale scale{1, kUnits[0]};
      for (size_t unit = 1; unit < kUnits.size() && std::fabs(largest_value) / scale.divisor >= 1024;
           ++unit) {
        scale = {scale.divisor * 1024, kUnits[unit]};
      }
      return scale;
    }
    case ValueKind::Fraction: return {0.01, "%"};
    default: return {1, std::string(spec.unit)};
  }
}

Delta delta_vs_baseline(const MetricSpec& spec, std::optional<double> value,
                        std::optional<double> baseline) {
  Delta delta;
  if (!value || !baseline || *baseline == 0 || !std::isfinite(*value) ||
      !std::isfinite(*baseline) || spec.better == Better::Neither) {
    return delta;
  }
  delta.percent = (*value - *baseline) / std::fabs(*baseline) * 100.0;
  if (std::fabs(*delta.percent) < spec.neutral_band_pct) {
    delta.verdict = Verdict::Neutral;
  } else {
    const bool increased = *delta.percent > 0;
    delta.verdict = increased == (spec.better == Better::Higher) ? Verdict::Better : Verdict::Worse;
  }
  return delta;
}

std::string format_percent_delta(double percent) {
  if (std::fabs(percent) < 0.005) return "±0.00 %";
  return fmt::format("{:+.2f} %", percent);
}

}  // namespace llmopt::pipeline::report
