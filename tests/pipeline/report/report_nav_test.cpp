// The run report's navigation bar (src/pipeline/report/html_report.cpp): one link per section the
// page has, in page order, and no link to a section it lacks. Checked by parsing report.html: the
// ids of its <section> elements against the targets of the <nav> links, on a run with every kind
// of section (summary, charts, tasks, two training curves, a benchmark, stages, recipe, manifest),
// on a sweep run and on a plain run (no tasks, training or benchmark section, so no such link).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <regex>
#include <string>
#include <vector>

#include "pipeline/report/report.h"
#include "tests/pipeline/report/fake_run_dir.h"

namespace llmopt::pipeline::report {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
namespace t = testing;
using nlohmann::json;

// The id of every <section ...> of the page, in order.
std::vector<std::string> section_ids(const std::string& html) {
  std::vector<std::string> ids;
  const std::regex re(R"re(<section\b[^>]*\bid="([^"]+)")re");
  for (auto it = std::sregex_iterator(html.begin(), html.end(), re); it != std::sregex_iterator(); ++it)
    ids.push_back((*it)[1].str());
  return ids;
}

struct NavLink {
  std::string target, label;
};

// The links of the page's (single) <nav> element.
std::vector<NavLink> nav_links(const std::string& html) {
  const auto begin = html.find("<nav>");
  const auto end = html.find("</nav>");
  EXPECT_NE(begin, std::string::npos);
  EXPECT_EQ(html.find("<nav>", begin + 1), std::string::npos) << "more than one <nav>";
  std::vector<NavLink> links;
  if (begin == std::string::npos || end == std::string::npos) return links;
  const std::string nav = html.substr(begin, end - begin);
  const std::regex re(R"re(<a href="#([^"]+)">([^<]*)</a>)re");
  for (auto it = std::sregex_iterator(nav.begin(), nav.end(), re); it != std::sregex_iterator(); ++it)
    links.push_back({(*it)[1].str(), (*it)[2].str()});
  return links;
}

std::vector<std::string> targets(const std::vector<NavLink>& links) {
  std::vector<std::string> out;
  for (const auto& l : links) out.push_back(l.target);
  return out;
}

std::string render(const std::filesystem::path& dir) {
  write_reports(dir.string());
  return t::read_text(dir / "report.html");
}

// baseline → quantize → q4 (both evaluations with task scores) → export, then a finetune stage
// "lora" with logged steps, another finetune "prefix" and a benchmark "bench".
TEST(ReportNav, LinksEverySectionInPageOrder) {
  json m = t::simple_run_metrics();
  for (auto& s : m["stages"]) {
    if (s["type"] != "evaluate") continue;
    s["metrics"]["arc_easy/acc"] = s["name"] == "baseline" ? 0.50 : 0.40;
    s["metrics"]["arc_easy/acc_stderr"] = 0.03;
  }
  m["stages"].push_back(t::stage_json(4, "lora", "finetune", "ok", 30, 1 << 21, {{"train_loss", 2.5}}));
  m["stages"].push_back(t::stage_json(5, "prefix", "finetune", "ok", 10, 1 << 21));
  m["stages"].push_back(t::stage_json(6, "bench", "benchmark", "ok", 2, 1 << 21,
                                      {{"pp_tok_s@t1_b1_c16", 1000.0}, {"tg_tok_s@t1_b1_c16", 250.0}}));
  const auto dir = t::make_temp_dir("nav-all");
  t::write_run_dir(dir, m);
  std::string events;
  for (const auto& [index, name] : {std::pair{4, "lora"}, std::pair{5, "prefix"}}) {
    for (int step = 1; step <= 3; ++step) {
      events += json({{"event", "train_step"}, {"index", index}, {"name", name}, {"step", step}, {"steps", 3},
                      {"loss", 3.0 - 0.1 * step}, {"lr", 1e-3}})
                    .dump() +
                "\n";
    }
  }
  t::write_text(dir / "events.jsonl", events);
  const std::string html = render(dir);

  const auto ids = section_ids(html);
  // The page has each kind of section (so that the comparison below covers them).
  EXPECT_THAT(ids, ElementsAre("summary", "charts", "tasks", "training-lora", "training-prefix", "benchmark-bench",
                               "timeline", "recipe", "manifest"));
  const auto links = nav_links(html);
  EXPECT_THAT(targets(links), ElementsAreArray(ids));
  for (const auto& l : links) EXPECT_FALSE(l.label.empty()) << l.target;
  EXPECT_EQ(links[2].label, "Tasks");
  EXPECT_EQ(links[3].label, "Training: lora");
  EXPECT_EQ(links[5].label, "Benchmark: bench");
  EXPECT_EQ(links[6].label, "Stages");
}

TEST(ReportNav, SweepRunLinksTheSweep) {
  const auto dir = t::make_temp_dir("nav-sweep");
  t::write_run_dir(dir, t::sweep_run_metrics());
  const std::string html = render(dir);
  const auto ids = section_ids(html);
  EXPECT_NE(std::find(ids.begin(), ids.end(), "sweep"), ids.end());
  EXPECT_THAT(targets(nav_links(html)), ElementsAreArray(ids));
}

TEST(ReportNav, NoLinkToAbsentSections) {
  const auto dir = t::make_temp_dir("nav-plain");
  t::write_run_dir(dir, t::simple_run_metrics());
  const std::string html = render(dir);
  EXPECT_THAT(targets(nav_links(html)), ElementsAre("summary", "charts", "timeline", "recipe", "manifest"));
}

}  // namespace
}  // namespace llmopt::pipeline::report
