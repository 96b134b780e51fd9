// write_reports on fake run directories: simple, failed, sweep, missing metrics, hostile text.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <regex>

#include "core/error.h"
#include "pipeline/report/report.h"
#include "tests/pipeline/report/fake_run_dir.h"

namespace llmopt::pipeline::report {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;
namespace t = testing;

size_t count_of(const std::string& text, const std::string& needle) {
  size_t count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++count;
  return count;
}

// The text of the first element `<tag ... class="...cls..."...>` ... up to `end`.
std::string first_block(const std::string& html, const std::string& start, const std::string& end) {
  const size_t from = html.find(start);
  if (from == std::string::npos) return "";
  const size_t to = html.find(end, from);
  return html.substr(from, to == std::string::npos ? std::string::npos : to + end.size() - from);
}

struct Rendered {
  std::string md;
  std::string html;
};

Rendered render(const std::filesystem::path& dir) {
  write_reports(dir.string());
  return {t::read_text(dir / "report.md"), t::read_text(dir / "report.html")};
}

// The checks every report.html must pass: one self-contained document, nothing fetched.
void expect_self_contained(const std::string& html) {
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(count_of(html, "<html"), 1u);
  EXPECT_EQ(count_of(html, "</html>"), 1u);
  EXPECT_THAT(html, Not(HasSubstr("<link")));
  EXPECT_THAT(html, Not(HasSubstr(" src=")));
  EXPECT_THAT(html, Not(HasSubstr("http://")));
  EXPECT_THAT(html, Not(HasSubstr("https://")));
  EXPECT_THAT(html, Not(HasSubstr("@import")));
  EXPECT_THAT(html, Not(HasSubstr("url(")));
}

TEST(ReportRender, SimpleRun) {
  const auto dir = t::make_temp_dir("simple");
  t::write_run_dir(dir, t::simple_run_metrics());
  const Rendered r = render(dir);
  expect_self_contained(r.html);

  // Header and summary: baseline row first, q4 row with deltas vs baseline.
  EXPECT_THAT(r.html, HasSubstr("<h1>gptq-q4</h1>"));
  EXPECT_THAT(r.html, HasSubstr("2026-11-26T10:00:00Z"));
  const std::string summary = first_block(r.html, "<table class=\"summary\">", "</table>");
  ASSERT_FALSE(summary.empty());
  EXPECT_LT(summary.find(">baseline<"), summary.find(">q4<"));
  // perplexity 10.0 -> 10.5 is +5 % and worse; model size 4 -> 1.25 MiB is -68.75 % and better;
  // generation speed 100 -> 160 tok/s is +60 % and better.
  EXPECT_THAT(summary, HasSubstr("10.500<span class=\"delta worse\">+5.00 %</span>"));
  EXPECT_THAT(summary, HasSubstr("1.25 MiB<span class=\"delta better\">-68.75 %</span>"));
  EXPECT_THAT(summary, HasSubstr("160.0<span class=\"delta better\">+60.00 %</span>"));
  // Timeline: all four stages, artifacts listed.
  const std::string timeline = first_block(r.html, "<table class=\"timeline\">", "</table>");
  EXPECT_EQ(count_of(timeline, "<tr class=\"stage\">"), 4u);
  EXPECT_THAT(timeline, HasSubstr("artifacts/model.gguf"));
  // Charts: two trade-off scatters (size, speed) and bar charts; recipe and manifest.
  EXPECT_EQ(count_of(r.html, "class=\"chart scatter-chart\""), 2u);
  EXPECT_EQ(count_of(r.html, "class=\"chart bar-chart\""), 8u);  // one per summary metric
  EXPECT_THAT(r.html, HasSubstr("<pre class=\"recipe\">seed: 0"));
  EXPECT_THAT(r.html, HasSubstr("Test CPU @ 2.0GHz"));
  EXPECT_THAT(r.html, Not(HasSubstr("class=\"alert\"")));

  EXPECT_THAT(r.md, HasSubstr("# llmopt run report: gptq-q4"));
  EXPECT_THAT(r.md, HasSubstr("| **baseline** | ok | 10.000 |"));
  EXPECT_THAT(r.md, HasSubstr("10.500 (+5.00 % \u2717)"));
  EXPECT_THAT(r.md, HasSubstr("1.25 MiB (-68.75 % \u2713)"));
  EXPECT_THAT(r.md, HasSubstr("```yaml\nseed: 0\n"));
  EXPECT_THAT(r.md, HasSubstr("| inputs.0.sha256 | 0123456789abcdef |"));
  // Every table row of the summary has as many cells as its header.
  const std::regex header_row(R"(\| Evaluation \| Status \|[^\n]*\n)");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.md, m, header_row));
  EXPECT_EQ(count_of(m.str(), "|"), 1u + 2u + 8u);  // evaluation, status, 8 metric columns
}

TEST(ReportRender, FailedRunShowsTheError) {
  const auto dir = t::make_temp_dir("failed");
  t::write_run_dir(dir, t::failed_run_metrics());
  const Rendered r = render(dir);
  expect_self_contained(r.html);
  EXPECT_THAT(r.html, HasSubstr("<span class=\"badge status-failed\">failed</span></header>"));
  const std::string alert = first_block(r.html, "<div class=\"alert\"", "</div>");
  EXPECT_THAT(alert, HasSubstr("stage 1 (quantize): [gptq] layer 3: Hessian is not positive definite"));
  EXPECT_THAT(r.html, HasSubstr("<tr class=\"failed\">"));
  EXPECT_THAT(r.html, HasSubstr("<pre class=\"error\">[gptq] layer 3"));
  const std::string timeline = first_block(r.html, "<table class=\"timeline\">", "</table>");
  EXPECT_EQ(count_of(timeline, "badge status-skipped"), 2u);
  EXPECT_THAT(r.md, HasSubstr("> **Run failed**"));
  EXPECT_THAT(r.md, HasSubstr("| **failed** |"));
  EXPECT_THAT(r.md, HasSubstr("**[gptq] layer 3: Hessian is not positive definite (damp 0.01)**"));
}

TEST(ReportRender, SweepParetoChart) {
  const auto dir = t::make_temp_dir("sweep");
  t::write_run_dir(dir, t::sweep_run_metrics());
  const Rendered r = render(dir);
  expect_self_contained(r.html);

  const std::string summary = first_block(r.html, "<table class=\"summary\">", "</table>");
  EXPECT_EQ(count_of(summary, "<tr class="), 5u);  // baseline + 4 sweep points
  EXPECT_THAT(summary, HasSubstr("bits=4,group_size=128"));
  // Tags: bits=4,group_size=128 is on neither front, bits=4,group_size=32 on both.
  EXPECT_THAT(summary, HasSubstr("sweep/003-bits=4-group_size=128</span>"));
  EXPECT_THAT(summary, HasSubstr("sweep/002-bits=4-group_size=32<span class=\"tag\">Pareto: size, speed</span>"));

  // First scatter: perplexity vs size. 5 markers, 1 baseline diamond, 1 dominated point, and a
  // front polyline through the 4 others in ascending size (see fake_run_dir.h).
  const std::string size_chart = first_block(r.html, "<svg class=\"chart scatter-chart\"", "</svg>");
  ASSERT_FALSE(size_chart.empty());
  EXPECT_THAT(size_chart, HasSubstr("Perplexity vs model size"));
  EXPECT_EQ(count_of(size_chart, "class=\"point "), 5u);
  EXPECT_EQ(count_of(size_chart, "class=\"point baseline"), 1u);
  EXPECT_EQ(count_of(size_chart, "class=\"point dominated\""), 1u);
  EXPECT_EQ(count_of(size_chart, "class=\"point-label\""), 5u);
  EXPECT_EQ(count_of(size_chart, "class=\"pareto-front\""), 1u);
  const std::regex polyline(R"re(class="pareto-front" points="([^"]*)")re");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(size_chart, m, polyline));
  const std::string coords = m[1].str();
  EXPECT_EQ(count_of(coords, ","), 4u);
  // Ascending x along the polyline.
  std::vector<double> xs;
  std::stringstream stream(coords);
  for (std::string pair; stream >> pair;) xs.push_back(std::stod(pair.substr(0, pair.find(','))));
  EXPECT_TRUE(std::is_sorted(xs.begin(), xs.end()));
  // The dominated marker is bits=4,group_size=128.
  EXPECT_THAT(size_chart, ::testing::ContainsRegex("point dominated[^>]*><title>bits=4,group_size=128"));
  // Axis ticks and units.
  EXPECT_THAT(size_chart, HasSubstr("Model size (MiB)"));
  // Sizes 0.75-4 MiB padded by 6 % give 1 MiB steps from 0 to 5.
  for (const char* tick : {">0</text>", ">1</text>", ">4</text>", ">5</text>"}) {
    EXPECT_THAT(size_chart, HasSubstr(std::string("text-anchor=\"middle\" fill=\"#64748b\"") + tick));
  }

  // Sweep section: one <details> per point with its stages.
  EXPECT_EQ(count_of(r.html, "<details"), 4u);
  EXPECT_THAT(r.md, HasSubstr("### Sweep point bits=2,group_size=32 (ok)"));
  EXPECT_THAT(r.md, HasSubstr("**Pareto front, Perplexity vs model size**"));
  EXPECT_THAT(r.md, Not(HasSubstr("- bits=4,group_size=128: perplexity 10.500, Model size")));
}

TEST(ReportRender, MissingMetricsAndFiles) {
  const auto dir = t::make_temp_dir("missing");
  json metrics = {{"run", {{"name", "sparse"}, {"status", "ok"}}},
                  {"stages", json::array({t::stage_json(0, "baseline", "evaluate", "ok", 1.0, 1e6,
                                                        {{"perplexity", 20.0}}),
                                          t::stage_json(1, "prune", "prune", "ok", 2.0, 1e6),
                                          {{"index", 2}, {"name", "after"}, {"type", "evaluate"},
                                           {"status", "ok"},
                                           {"metrics", {{"perplexity", 21.0}, {"kld_mean", nullptr}}}}})}};
  t::write_run_dir(dir, metrics, std::nullopt, std::nullopt);
  const Rendered r = render(dir);
  expect_self_contained(r.html);
  // Only perplexity and peak memory (from the stage meter) have values; no trade-off plots
  // without size or speed, but a perplexity bar chart.
  const std::string summary = first_block(r.html, "<table class=\"summary\">", "</table>");
  EXPECT_THAT(summary, HasSubstr(">Perplexity<"));
  EXPECT_THAT(summary, Not(HasSubstr("KLD")));
  EXPECT_THAT(summary, HasSubstr("21.000<span class=\"delta worse\">+5.00 %</span>"));
  EXPECT_EQ(count_of(r.html, "scatter-chart"), 0u);
  EXPECT_GE(count_of(r.html, "bar-chart"), 1u);
  EXPECT_THAT(r.html, HasSubstr("manifest.json was not found"));
  EXPECT_THAT(r.html, HasSubstr("config.resolved.yaml was not found"));
  EXPECT_THAT(r.md, HasSubstr("manifest.json was not found"));

  // A run that failed before any evaluation still renders.
  const auto empty = t::make_temp_dir("empty");
  t::write_run_dir(empty, {{"run", {{"name", "early"}, {"status", "interrupted"}}}}, std::nullopt,
                   std::nullopt);
  const Rendered e = render(empty);
  EXPECT_THAT(e.html, HasSubstr("No evaluate stage in this run"));
  EXPECT_THAT(e.html, HasSubstr("status-interrupted"));
}

// The pipeline's own layout: times nested in the manifest's "run" object, a run that failed
// before any stage (its error only in events.jsonl), and a sweep point that failed outside its
// stages.
TEST(ReportRender, PipelineLayoutAndEarlyFailures) {
  const auto dir = t::make_temp_dir("early");
  const json manifest = {{"llmopt", {{"version", "0.1.0"}, {"git_commit", "abc"}}},
                         {"run", {{"name", "early"}, {"start_time", "2026-11-26T09:00:00Z"},
                                  {"end_time", "2026-11-26T09:00:01Z"}}},
                         {"inputs", json::array({{{"path", "m.bin"}, {"sha256", "ff"}, {"bytes", 3}}})}};
  t::write_run_dir(dir, {{"run", {{"name", "early"}, {"status", "failed"}}}, {"stages", json::array()}},
                   manifest, std::nullopt);
  t::write_text(dir / "events.jsonl",
                "{\"event\":\"run_start\"}\n"
                "{\"event\":\"run_end\",\"status\":\"failed\",\"error\":\"[llama2c] m.bin: truncated\"}\n"
                "{\"event\":");  // a line cut short by a crash is skipped
  const Rendered r = render(dir);
  EXPECT_THAT(r.html, HasSubstr("started <b>2026-11-26T09:00:00Z</b>"));
  EXPECT_THAT(first_block(r.html, "<div class=\"alert\"", "</div>"),
              HasSubstr("run: [llama2c] m.bin: truncated"));
  EXPECT_THAT(r.html, HasSubstr("<table class=\"records\"><thead><tr><th>bytes</th><th>path</th>"));
  EXPECT_THAT(r.md, HasSubstr("> - run: [llama2c] m.bin: truncated"));

  const auto sweep_dir = t::make_temp_dir("sweep-fail");
  json metrics = t::sweep_run_metrics();
  metrics["run"]["status"] = "failed";
  metrics["sweep"][1]["status"] = "failed";
  metrics["sweep"][1]["error"] = "[recipe] pipeline.1.bits: expected 2..8, found 9";
  metrics["sweep"][1]["stages"] = json::array();
  metrics["sweep"][2]["stages"][1]["status"] = "skipped";
  metrics["sweep"][2]["stages"][1]["metrics"] = json::object();
  t::write_run_dir(sweep_dir, metrics);
  const Rendered s = render(sweep_dir);
  EXPECT_THAT(first_block(s.html, "<div class=\"alert\"", "</div>"),
              HasSubstr("sweep bits=3,group_size=32: [recipe] pipeline.1.bits: expected 2..8, found 9"));
  // The failed point's details are open; its summary row has no numbers.
  EXPECT_THAT(s.html, HasSubstr("<details open><summary>bits=3,group_size=32<span class=\"badge status-failed\">"));
  // Only 3 of the 5 points have perplexity: the failed one and the skipped evaluation drop out.
  const std::string size_chart = first_block(s.html, "<svg class=\"chart scatter-chart\"", "</svg>");
  EXPECT_EQ(count_of(size_chart, "class=\"point "), 3u);
  // A skipped stage shows no wall time or memory instead of the runner's 0 placeholders.
  EXPECT_THAT(s.md, HasSubstr("| 2 | evaluate | evaluate | skipped | \u2014 | \u2014 |"));
}

// Everything from the run directory is data, never markup.
TEST(ReportRender, EscapesInput) {
  const auto dir = t::make_temp_dir("escape");
  const std::string evil = "<script>alert('x')</script>&\"|`";
  json metrics = t::sweep_run_metrics();
  metrics["run"]["name"] = evil;
  metrics["stages"][0]["name"] = evil;
  metrics["stages"][0]["error"] = evil + "\nsecond line";
  metrics["stages"][0]["artifacts"] = json::array({"javascript:alert(1)", "a<b>.gguf"});
  metrics["sweep"][0]["name"] = evil;
  json manifest = t::default_manifest();
  manifest[evil] = evil;
  t::write_run_dir(dir, metrics, manifest, "name: \"" + evil + "\"\n```\n# fence\n");
  const Rendered r = render(dir);
  expect_self_contained(r.html);
  // The only <script> element is the report's own marker.
  EXPECT_EQ(count_of(r.html, "<script>"), 1u);
  EXPECT_THAT(r.html, Not(HasSubstr("alert('x')")));
  EXPECT_THAT(r.html, HasSubstr("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;|`"));
  EXPECT_THAT(r.html, Not(HasSubstr("href=\"javascript:")));
  EXPECT_THAT(r.html, HasSubstr("a&lt;b&gt;.gguf"));

  // Outside the recipe's code block (where GitHub shows text verbatim) nothing is raw markup.
  EXPECT_THAT(r.md.substr(0, r.md.find("## Resolved recipe")), Not(HasSubstr("<script>")));
  EXPECT_THAT(r.md.substr(r.md.find("## Manifest")), Not(HasSubstr("<script>")));
  EXPECT_THAT(r.md, HasSubstr("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;\\|`"));
  // The recipe contains ``` so its fence must be longer, and it stays verbatim inside.
  EXPECT_THAT(r.md, HasSubstr("````yaml\nname: \"" + evil + "\"\n```\n# fence\n````\n"));
}

// Manifest keys are free-form: deep nesting is cut off into JSON text rather than recursed.
TEST(ReportRender, DeeplyNestedManifest) {
  const auto dir = t::make_temp_dir("nested");
  json manifest = "leaf";
  for (int i = 0; i < 40; ++i) manifest = json{{"k", manifest}};
  t::write_run_dir(dir, t::simple_run_metrics(), manifest);
  const Rendered r = render(dir);
  EXPECT_THAT(r.html, HasSubstr("{&quot;k&quot;:{&quot;k&quot;:"));
  EXPECT_THAT(r.md, HasSubstr("{&quot;k&quot;:{&quot;k&quot;:"));
  EXPECT_THAT(r.html, HasSubstr("&quot;leaf&quot;"));
}

TEST(ReportRender, WritesAtomicallyAndReplaces) {
  const auto dir = t::make_temp_dir("atomic");
  t::write_run_dir(dir, t::simple_run_metrics());
  t::write_text(dir / "report.html", "stale");
  write_reports(dir.string());
  EXPECT_NE(t::read_text(dir / "report.html"), "stale");
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos)
        << "temporary file left behind: " << entry.path();
  }
  // Same input, same bytes: the report holds no render-time clock.
  const std::string first = t::read_text(dir / "report.html");
  write_reports(dir.string());
  EXPECT_EQ(t::read_text(dir / "report.html"), first);
}

TEST(ReportRender, BadInputNamesTheFile) {
  const auto dir = t::make_temp_dir("bad");
  try {
    write_reports(dir.string());
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("[report]"));
    EXPECT_THAT(e.what(), HasSubstr("metrics.json"));
  }
  t::write_text(dir / "metrics.json", "{\"run\": {\"name\": \"x\"}, \"stages\": [");
  EXPECT_THROW(write_reports(dir.string()), InputError);
  t::write_text(dir / "metrics.json", R"({"stages": [{"name": "a", "wall_s": "slow"}]})");
  try {
    write_reports(dir.string());
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("stages[0]: 'wall_s' must be a number, found string"));
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "report.html"));
}

}  // namespace
}  // namespace llmopt::pipeline::report
