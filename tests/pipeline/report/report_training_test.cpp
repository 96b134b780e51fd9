// Training curves in run reports (src/pipeline/report/training_section.h): a run directory whose
// events.jsonl holds train_step events (as src/stages/finetune writes them) gets, per finetune
// stage, a loss chart (training loss per step, validation losses as points) and a learning-rate
// chart with one point per logged step. Structure only: point counts come from the synthetic
// events written here, not from the code under test.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <string>

#include "pipeline/report/report.h"
#include "pipeline/report/run_record.h"
#include "tests/pipeline/report/fake_run_dir.h"

namespace llmopt::pipeline::report {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
namespace t = testing;
using nlohmann::json;

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// The section of `html` that starts at `<section ... id="training-<stage>">`, up to its end.
std::string section(const std::string& html, const std::string& stage) {
  const auto begin = html.find("id=\"training-" + stage + "\"");
  if (begin == std::string::npos) return "";
  return html.substr(begin, html.find("</section>", begin) - begin);
}

std::string train_step(int index, const std::string& name, int step, int steps, double loss,
                       double lr, double val_loss = -1) {
  json e = {{"event", "train_step"}, {"index", index}, {"name", name}, {"step", step},
            {"steps", steps},        {"loss", loss},   {"lr", lr},     {"grad_norm", 1.5},
            {"tokens", 2048},        {"tokens_per_s", 3000.0}};
  if (val_loss >= 0) e["val_loss"] = val_loss;
  return e.dump() + "\n";
}

// baseline evaluate, finetune "lora" (12 steps, validation at 4, 8, 12; step 3 logged twice as
// after a resume), evaluate, finetune "prefix" (5 steps, no validation).
void write_finetune_run(const std::filesystem::path& dir) {
  json m = t::simple_run_metrics();
  m["stages"] = json::array({t::stage_json(0, "baseline", "evaluate", "ok", 1, 1 << 20, {{"perplexity", 10}}),
                             t::stage_json(1, "lora", "finetune", "ok", 30, 1 << 21, {{"train_loss", 2.5}}),
                             t::stage_json(2, "adapted", "evaluate", "ok", 1, 1 << 20, {{"perplexity", 8}}),
                             t::stage_json(3, "prefix", "finetune", "ok", 10, 1 << 21)});
  t::write_run_dir(dir, m);
  std::string events = "{\"event\":\"run_start\",\"name\":\"r\",\"stages\":4}\n";
  events += "{\"event\":\"stage_start\",\"index\":1,\"name\":\"lora\",\"type\":\"finetune\"}\n";
  for (int s = 1; s <= 12; ++s) {
    events += train_step(1, "lora", s, 12, 5.0 - 0.2 * s, 1e-3 * (1 - s / 12.0), s % 4 == 0 ? 4.0 - 0.1 * s : -1);
    if (s == 3) events += "{\"event\":\"train_step\",\"step\":3,\"lo";  // a line cut short by a kill
    if (s == 3) events += "\n" + train_step(1, "lora", 3, 12, 4.4, 7.5e-4);  // the resumed step
  }
  events += "{\"event\":\"stage_end\",\"index\":1,\"name\":\"lora\",\"status\":\"ok\"}\n";
  for (int s = 1; s <= 5; ++s) events += train_step(3, "prefix", s, 5, 7.0 - 0.5 * s, 1e-2);
  events += "{\"event\":\"run_end\",\"status\":\"ok\"}\n";
  t::write_text(dir / "events.jsonl", events);
}

TEST(ReportTraining, ParsesTrainStepEventsPerStage) {
  const auto dir = t::make_temp_dir("training-parse");
  write_finetune_run(dir);
  const RunRecord run = load_run(dir.string());
  ASSERT_EQ(run.training.size(), 2u);
  EXPECT_EQ(run.training[0].stage, "lora");
  EXPECT_EQ(run.training[0].index, 1);
  ASSERT_EQ(run.training[0].points.size(), 12u);  // step 3 once: the resumed record
  EXPECT_EQ(run.training[0].points[2].step, 3);
  EXPECT_DOUBLE_EQ(run.training[0].points[2].loss, 4.4);
  EXPECT_FALSE(run.training[0].points[2].val_loss.has_value());
  ASSERT_TRUE(run.training[0].points[3].val_loss.has_value());
  EXPECT_DOUBLE_EQ(*run.training[0].points[3].val_loss, 3.6);
  EXPECT_EQ(run.training[1].stage, "prefix");
  EXPECT_EQ(run.training[1].points.size(), 5u);
}

TEST(ReportTraining, HtmlHasLossAndLrChartsWithOnePointPerStep) {
  const auto dir = t::make_temp_dir("training-report");
  write_finetune_run(dir);
  write_reports(dir.string());
  const std::string html = t::read_text(dir / "report.html");
  EXPECT_EQ(count(html, "<section class=\"training\""), 2u);

  const std::string lora = section(html, "lora");
  ASSERT_FALSE(lora.empty());
  EXPECT_EQ(count(lora, "<svg class=\"chart line-chart\""), 2u);
  EXPECT_THAT(lora, HasSubstr("class=\"series train-loss\" data-points=\"12\""));
  EXPECT_THAT(lora, HasSubstr("class=\"series val-loss\" data-points=\"3\""));
  EXPECT_EQ(count(lora, "<circle class=\"marker val-loss\""), 3u);
  EXPECT_THAT(lora, HasSubstr("class=\"series lr\" data-points=\"12\""));
  EXPECT_THAT(lora, HasSubstr("12 steps logged (step 1 to 12)"));
  EXPECT_THAT(lora, HasSubstr("best validation loss 2.8000 at step 12"));

  const std::string prefix = section(html, "prefix");
  ASSERT_FALSE(prefix.empty());
  EXPECT_THAT(prefix, HasSubstr("class=\"series train-loss\" data-points=\"5\""));
  EXPECT_THAT(prefix, HasSubstr("class=\"series lr\" data-points=\"5\""));
  EXPECT_THAT(prefix, Not(HasSubstr("val-loss")));  // no validation: no series, no legend entry
  EXPECT_THAT(prefix, Not(HasSubstr("validation")));

  // Each polyline's point list has as many x,y pairs as its data-points attribute says.
  const auto pos = lora.find("class=\"series train-loss\"");
  const auto pts = lora.find("points=\"", lora.find("data-points", pos) + 12) + 8;
  const std::string coords = lora.substr(pts, lora.find('"', pts) - pts);
  EXPECT_EQ(count(coords, ","), 12u);

  const std::string md = t::read_text(dir / "report.md");
  EXPECT_THAT(md, HasSubstr("## Training"));
  EXPECT_THAT(md, HasSubstr("- **prefix**: 5 steps logged"));
}

TEST(ReportTraining, NoTrainEventsNoSection) {
  const auto dir = t::make_temp_dir("training-none");
  t::write_run_dir(dir, t::simple_run_metrics());
  write_reports(dir.string());
  EXPECT_THAT(t::read_text(dir / "report.html"), Not(HasSubstr("class=\"training\"")));
  EXPECT_THAT(t::read_text(dir / "report.md"), Not(HasSubstr("## Training")));
}

}  // namespace
}  // namespace llmopt::pipeline::report
