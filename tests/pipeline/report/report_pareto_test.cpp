// Pareto fronts, axis ticks and value formatting, checked against hand-worked examples.
#include <gtest/gtest.h>

#include "pipeline/report/metric_catalog.h"
#include "pipeline/report/pareto.h"
#include "pipeline/report/svg_chart.h"

namespace llmopt::pipeline::report {
namespace {

// Worked by hand: with both objectives minimised,
//   A(1,5) front (smallest x), B(2,3) front, C(3,4) dominated by B, D(4,1) front (smallest y),
//   E(2,3) equal to B (equal points do not dominate each other), F(5,1) dominated by D.
// Ascending x with ties broken by y then index: A, B, E, D.
TEST(ReportPareto, MinimiseBothHandChecked) {
  const std::vector<Objective2D> points = {{1, 5}, {2, 3}, {3, 4}, {4, 1}, {2, 3}, {5, 1}};
  EXPECT_EQ(pareto_front(points, true, true), (std::vector<size_t>{0, 1, 4, 3}));
}

// Maximising x, minimising y: F(5,1) has the largest x and the smallest y, so it dominates all.
TEST(ReportPareto, MaximiseXHandChecked) {
  const std::vector<Objective2D> points = {{1, 5}, {2, 3}, {3, 4}, {4, 1}, {2, 3}, {5, 1}};
  EXPECT_EQ(pareto_front(points, false, true), (std::vector<size_t>{5}));
}

// Speed-vs-quality shape: faster models are worse, all trade off, so all are on the front;
// adding a point that is both slower and worse than another removes only that point.
TEST(ReportPareto, TradeOffCurve) {
  std::vector<Objective2D> points = {{100, 10.0}, {160, 10.3}, {170, 11.0}, {180, 14.0}};
  EXPECT_EQ(pareto_front(points, false, true), (std::vector<size_t>{0, 1, 2, 3}));
  points.push_back({158, 10.5});  // slower and worse than {160, 10.3}
  EXPECT_EQ(pareto_front(points, false, true), (std::vector<size_t>{0, 1, 2, 3}));
}

TEST(ReportPareto, EmptyAndSingle) {
  EXPECT_TRUE(pareto_front({}, true, true).empty());
  EXPECT_EQ(pareto_front({{3, 3}}, true, true), (std::vector<size_t>{0}));
}

// Nice ticks: 1, 2, 2.5 or 5 times a power of ten, covering the range.
TEST(ReportTicks, NiceSteps) {
  // range 9.3 / 4 intervals = 2.325 -> 2.5
  EXPECT_EQ(nice_ticks(0, 9.3, 5), (std::vector<double>{0, 2.5, 5, 7.5, 10}));
  // range 0.43 / 5 = 0.086 -> 0.1; first tick floor(0.71 / 0.1) = 0.7, last >= 1.14 -> 1.2
  const auto ticks = nice_ticks(0.71, 1.14, 6);
  ASSERT_EQ(ticks.size(), 6u);
  EXPECT_NEAR(ticks.front(), 0.7, 1e-12);
  EXPECT_NEAR(ticks.back(), 1.2, 1e-12);
  // A zero-width range is widened by 10 % of its value on each side.
  const auto flat = nice_ticks(10, 10, 5);
  EXPECT_LE(flat.front(), 9.0);
  EXPECT_GE(flat.back(), 11.0);
  EXPECT_EQ(format_tick(7.5, 2.5), "7.5");
  EXPECT_EQ(format_tick(0.25, 0.25), "0.25");
  EXPECT_EQ(format_tick(200, 100), "200");
}

TEST(ReportFormat, ValuesAndUnits) {
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(format_bytes(1.25 * 1024 * 1024), "1.25 MiB");
  EXPECT_EQ(format_bytes(3.0 * 1024 * 1024 * 1024), "3.00 GiB");
  EXPECT_EQ(format_duration(0.42), "0.42 s");
  EXPECT_EQ(format_duration(75), "1 min 15 s");
  EXPECT_EQ(format_duration(4000), "1 h 06 min");
  EXPECT_EQ(format_value(*find_metric("top1_agreement"), 0.9341), "93.41 %");
  EXPECT_EQ(format_value(*find_metric("perplexity"), 10.5), "10.500");
  EXPECT_EQ(format_value(*find_metric("tokens"), 1048576), "1,048,576");
  EXPECT_EQ(format_percent_delta(5.0), "+5.00 %");
  EXPECT_EQ(format_percent_delta(-0.4), "-0.40 %");
}

// Direction-aware verdicts: lower perplexity is better, higher speed is better, and a change
// inside the metric's noise band is neutral.
TEST(ReportFormat, DeltaVerdicts) {
  const MetricSpec& ppl = *find_metric("perplexity");
  const MetricSpec& speed = *find_metric("tg_tok_s");
  const Delta worse = delta_vs_baseline(ppl, 10.5, 10.0);
  ASSERT_TRUE(worse.percent);
  EXPECT_NEAR(*worse.percent, 5.0, 1e-12);
  EXPECT_EQ(worse.verdict, Verdict::Worse);
  EXPECT_EQ(delta_vs_baseline(ppl, 9.0, 10.0).verdict, Verdict::Better);
  EXPECT_EQ(delta_vs_baseline(speed, 160, 100).verdict, Verdict::Better);
  EXPECT_EQ(delta_vs_baseline(speed, 101, 100).verdict, Verdict::Neutral);  // 1 % < 2 % band
  EXPECT_EQ(delta_vs_baseline(ppl, 10.0, 0.0).verdict, Verdict::Unknown);   // no % of zero
  EXPECT_FALSE(delta_vs_baseline(ppl, std::nullopt, 10.0).percent);
}

}  // namespace
}  // namespace llmopt::pipeline::report
