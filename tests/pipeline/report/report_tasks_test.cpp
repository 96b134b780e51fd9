// Task-score comparison in run reports and `llmopt compare` (src/pipeline/report/task_compare.h):
// deltas, the standard error of a difference and the 1.96·SE significance rule against values
// worked out by hand; the report's task section, charts and drill-down; compare's JSON.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "pipeline/report/report.h"
#include "pipeline/report/task_compare.h"
#include "tests/pipeline/report/fake_run_dir.h"

namespace llmopt::pipeline::report {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
namespace t = testing;
using nlohmann::json;

// simple_run_metrics (baseline → quantize → q4) with task scores on both evaluations:
//   arc_easy/acc  baseline 0.50 ± 0.03, q4 0.40 ± 0.04: Δ −0.10, SE √(0.03² + 0.04²) = 0.05,
//                 |Δ| 0.10 > 1.96 · 0.05 = 0.098 → significant, worse.
//   piqa/acc      baseline 0.60 ± 0.02, q4 0.57 ± 0.02: Δ −0.03, SE 0.028284, 1.96 SE 0.05544 → n.s.
//   tinystories/word_perplexity 30 → 33 (no stderr): never significant; lower is better.
json run_with_tasks() {
  json m = t::simple_run_metrics();
  for (auto& s : m["stages"]) {
    if (s["type"] != "evaluate") continue;
    const bool base = s["name"] == "baseline";
    s["metrics"]["arc_easy/acc"] = base ? 0.50 : 0.40;
    s["metrics"]["arc_easy/acc_stderr"] = base ? 0.03 : 0.04;
    s["metrics"]["arc_easy/chance"] = 0.25;
    s["metrics"]["arc_easy/samples"] = 200;
    s["metrics"]["piqa/acc"] = base ? 0.60 : 0.57;
    s["metrics"]["piqa/acc_stderr"] = 0.02;
    s["metrics"]["tinystories/word_perplexity"] = base ? 30.0 : 33.0;
  }
  return m;
}

TEST(ReportTasks, DeltaStderrAndSignificanceByHand) {
  TaskScore b{"arc_easy/acc", "arc_easy", "acc", 0.50, 0.03, true};
  TaskScore q{"arc_easy/acc", "arc_easy", "acc", 0.40, 0.04, true};
  auto d = task_delta(q, b);
  EXPECT_NEAR(d.delta, -0.10, 1e-15);
  EXPECT_NEAR(*d.stderr_diff, 0.05, 1e-15);
  EXPECT_TRUE(d.significant);
  EXPECT_FALSE(d.better);
  // Just inside the band: Δ = 0.09 < 0.098.
  q.value = 0.59;
  d = task_delta(q, b);
  EXPECT_FALSE(d.significant);
  // Perplexity-type: lower is better, no stderr → not significant.
  TaskScore pb{"t/word_perplexity", "t", "word_perplexity", 30, std::nullopt, false};
  TaskScore pq = pb;
  pq.value = 20;
  d = task_delta(pq, pb);
  EXPECT_FALSE(d.stderr_diff.has_value());
  EXPECT_FALSE(d.significant);
}

TEST(ReportTasks, ScoresOfAPointSkipBookkeepingKeys) {
  EvaluationPoint p;
  p.metrics = {{"perplexity", 10},
               {"arc_easy/acc", 0.5},
               {"arc_easy/acc_stderr", 0.03},
               {"arc_easy/chance", 0.25},
               {"arc_easy/samples", 200},
               {"gsm8k/exact_match,strict-match", 0.1},
               {"gsm8k/exact_match_stderr,strict-match", 0.02},
               {"tinystories/bits_per_byte", 1.2}};
  const auto s = task_scores(p);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].key, "arc_easy/acc");
  EXPECT_DOUBLE_EQ(*s[0].stderr_value, 0.03);
  EXPECT_EQ(s[1].metric, "exact_match,strict-match");
  EXPECT_DOUBLE_EQ(*s[1].stderr_value, 0.02);
  EXPECT_FALSE(s[2].higher_is_better);
  // Mean of the accuracy-type scores: (0.5 + 0.1) / 2.
  EXPECT_NEAR(*mean_task_score(p), 0.3, 1e-15);
}

TEST(ReportTasks, RunReportHasTaskTableChartsAndDrillDown) {
  const auto dir = t::make_temp_dir("tasks-report");
  t::write_run_dir(dir, run_with_tasks());
  write_reports(dir.string());
  const std::string html = t::read_text(dir / "report.html");
  EXPECT_THAT(html, HasSubstr("<section id=\"tasks\">"));
  EXPECT_THAT(html, HasSubstr("<table class=\"task-table\">"));
  // arc_easy: significant and worse; piqa: n.s.
  EXPECT_THAT(html, HasSubstr("task-delta significant bad\">\u0394 \u22120.1000 \u00b1 0.0500 worse"));
  EXPECT_THAT(html, HasSubstr("task-delta ns\">\u0394 \u22120.0300 \u00b1 0.0283 n.s."));
  // Both evaluations have model_bytes and tg_tok_s: quality vs size and vs speed.
  EXPECT_THAT(html, HasSubstr("data-chart=\"quality-size\""));
  EXPECT_THAT(html, HasSubstr("data-chart=\"quality-speed\""));
  EXPECT_THAT(html, HasSubstr("<details class=\"task-drill\" id=\"task-arc_easy\">"));
  EXPECT_THAT(html, HasSubstr("200 documents, chance 0.2500"));
  const std::string md = t::read_text(dir / "report.md");
  EXPECT_THAT(md, HasSubstr("## Tasks"));
  EXPECT_THAT(md, HasSubstr("| arc_easy | acc | 0.5000 \u00b1 0.0300 | 0.4000 \u00b1 0.0400<br>\u0394 \u22120.1000 \u00b1 0.0500 worse **\u2731** |"));
}

TEST(ReportTasks, NoTaskSectionWithoutTaskScores) {
  const auto dir = t::make_temp_dir("tasks-none");
  t::write_run_dir(dir, t::simple_run_metrics());
  write_reports(dir.string());
  EXPECT_THAT(t::read_text(dir / "report.html"), Not(HasSubstr("<section id=\"tasks\">")));
  EXPECT_THAT(t::read_text(dir / "report.md"), Not(HasSubstr("## Tasks")));
}

TEST(ReportTasks, CompareAcrossRunsJsonAndTable) {
  const auto a = t::make_temp_dir("tasks-cmp-a");
  const auto b = t::make_temp_dir("tasks-cmp-b");
  t::write_run_dir(a, run_with_tasks());
  json other = run_with_tasks();
  for (auto& s : other["stages"])
    if (s["name"] == "q4") s["metrics"]["arc_easy/acc"] = 0.47;  // Δ −0.03 vs a's baseline: n.s.
  t::write_run_dir(b, other);
  const auto points = compare_points({a.string(), b.string()});
  ASSERT_EQ(points.size(), 4u);  // two evaluations per run
  const json j = compare_runs_json(points);
  EXPECT_EQ(j["reference"]["evaluation"], "baseline");
  EXPECT_EQ(j["reference"]["dir"], a.string());
  const auto& ev = j["evaluations"];
  EXPECT_FALSE(ev[0]["tasks"]["arc_easy/acc"].contains("delta"));  // the reference itself
  EXPECT_NEAR(ev[1]["tasks"]["arc_easy/acc"]["delta"].get<double>(), -0.10, 1e-12);
  EXPECT_TRUE(ev[1]["tasks"]["arc_easy/acc"]["significant"].get<bool>());
  // Run b's baseline is compared with run a's baseline too (identical: Δ 0).
  EXPECT_NEAR(ev[2]["tasks"]["arc_easy/acc"]["delta"].get<double>(), 0.0, 1e-15);
  EXPECT_NEAR(ev[3]["tasks"]["arc_easy/acc"]["delta"].get<double>(), -0.03, 1e-12);
  EXPECT_FALSE(ev[3]["tasks"]["arc_easy/acc"]["significant"].get<bool>());
  EXPECT_TRUE(ev[1]["metrics"].contains("model_bytes"));
  const std::string md = compare_runs_markdown(points);
  EXPECT_THAT(md, HasSubstr("| Task | Metric |"));
  EXPECT_THAT(md, HasSubstr("**\u2731**"));
  const std::string html = compare_runs_html(points, "");
  EXPECT_THAT(html, HasSubstr("data-chart=\"quality-size\""));
  EXPECT_THAT(html, HasSubstr("data-report-script"));
}

TEST(ReportBenchmark, GridTableAndChartsFromStageMetrics) {
  json m = t::simple_run_metrics();
  json met = json::object();
  // Two grid points (t1 b1 c16, t2 b4 c64) plus unrelated keys that are not grid figures.
  met["pp_tok_s@t1_b1_c16"] = 1000.0;
  met["tg_tok_s@t1_b1_c16"] = 250.0;
  met["ttft_s@t1_b1_c16"] = 0.016;
  met["kv_cache_bytes@t1_b1_c16"] = 2048.0;
  met["pp_tok_s@t2_b4_c64"] = 1800.0;
  met["tg_tok_s@t2_b4_c64"] = 400.0;
  met["pp_tok_s"] = 1000.0;
  met["odd@nothing"] = 1.0;
  m["stages"].push_back(t::stage_json(4, "bench", "benchmark", "ok", 2.0, 50.0 * 1048576, met));
  const auto dir = t::make_temp_dir("bench-report");
  t::write_run_dir(dir, m);
  write_reports(dir.string());
  const std::string html = t::read_text(dir / "report.html");
  EXPECT_THAT(html, HasSubstr("<section class=\"benchmark\" id=\"benchmark-bench\">"));
  EXPECT_THAT(html, HasSubstr("<th>Device</th><th>Threads</th>"));
  EXPECT_THAT(html, HasSubstr("<tr><td>cpu</td><td>1</td><td>1</td><td>16</td><td>1000.0</td><td>250.0</td><td>16.000 ms</td>"));
  EXPECT_THAT(html, HasSubstr("<tr><td>cpu</td><td>2</td><td>4</td><td>64</td><td>1800.0</td><td>400.0</td><td>\u2014</td>"));
  size_t charts = 0;
  for (size_t at = html.find("benchmark-chart"); at != std::string::npos; at = html.find("benchmark-chart", at + 1)) ++charts;
  EXPECT_EQ(charts, 2u);
  EXPECT_THAT(t::read_text(dir / "report.md"), HasSubstr("| cpu | 1 | 1 | 16 | 1000.0 | 250.0 | 16.000 ms |"));
  EXPECT_THAT(t::read_text(dir / "report.md"), HasSubstr("2.00 KiB"));
}

// A device axis (src/stages/benchmark `devices`): CUDA points are `<figure>@<device>_t<T>_b<B>_c<C>`,
// a device skipped for want of CUDA is the text metric `skipped@<device>`. The table has a Device
// column, the CPU's rows first, then the other devices', then a "skipped: no CUDA" row whose cells
// span the whole table; the bar labels name the device.
TEST(ReportBenchmark, DeviceColumnAndSkippedDevice) {
  json m = t::simple_run_metrics();
  json met = json::object();
  met["pp_tok_s@t2_b1_c16"] = 1000.0;
  met["tg_tok_s@t2_b1_c16"] = 250.0;
  met["pp_tok_s@cuda:1_t2_b1_c16"] = 9000.0;
  met["tg_tok_s@cuda:1_t2_b1_c16"] = 900.0;
  met["skipped@cuda"] = "this libtorch was built without CUDA";
  met["engine"] = "native";
  met["engine@cuda:1"] = "torch";
  m["stages"].push_back(t::stage_json(4, "bench", "benchmark", "ok", 2.0, 50.0 * 1048576, met));
  const auto dir = t::make_temp_dir("bench-devices");
  t::write_run_dir(dir, m);
  write_reports(dir.string());
  const std::string html = t::read_text(dir / "report.html");
  const auto cpu_row = html.find("<tr><td>cpu</td><td>2</td><td>1</td><td>16</td><td>1000.0</td><td>250.0</td>");
  const auto cuda_row = html.find("<tr><td>cuda:1</td><td>2</td><td>1</td><td>16</td><td>9000.0</td><td>900.0</td>");
  const auto skipped_row = html.find(
      "<tr class=\"skipped\"><td>cuda</td><td colspan=\"11\" title=\"this libtorch was built without CUDA\">"
      "skipped: no CUDA</td></tr>");
  ASSERT_NE(cpu_row, std::string::npos);
  ASSERT_NE(cuda_row, std::string::npos);
  ASSERT_NE(skipped_row, std::string::npos);
  EXPECT_LT(cpu_row, cuda_row);
  EXPECT_LT(cuda_row, skipped_row);
  EXPECT_THAT(html, HasSubstr("cuda:1 t2 b1 ctx 16"));  // a bar label
  EXPECT_THAT(html, HasSubstr("cpu t2 b1 ctx 16"));
  // Markdown: the skipped row has as many cells as the header (4 grid columns + 8 figures).
  const std::string md = t::read_text(dir / "report.md");
  EXPECT_THAT(md, HasSubstr("| Device | Threads | Batch | Context |"));
  EXPECT_THAT(md, HasSubstr("| cuda:1 | 2 | 1 | 16 | 9000.0 | 900.0 |"));
  const auto at = md.find("| cuda | skipped: no CUDA (this libtorch was built without CUDA) |");
  ASSERT_NE(at, std::string::npos);
  const std::string row = md.substr(at, md.find('\n', at) - at);
  EXPECT_EQ(std::count(row.begin(), row.end(), '|'), 13);
}

}  // namespace
}  // namespace llmopt::pipeline::report
