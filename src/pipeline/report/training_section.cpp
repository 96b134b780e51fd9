#include "pipeline/report/training_section.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "pipeline/report/svg_chart.h"
#include "pipeline/report/text_escape.h"

namespace llmopt::pipeline::report {
namespace {

std::string summary(const TrainCurve& c) {
  const TrainPoint& first = c.points.front();
  const TrainPoint& last = c.points.back();
  std::string text = fmt::format("{} steps logged (step {} to {}), training loss {:.4f} \u2192 {:.4f}",
                                 c.points.size(), first.step, last.step, first.loss, last.loss);
  double best = std::numeric_limits<double>::infinity();
  long best_step = 0;
  size_t validations = 0;
  for (const auto& p : c.points) {
    if (!p.val_loss) continue;
    ++validations;
    if (*p.val_loss < best) best = *p.val_loss, best_step = p.step;
  }
  if (validations > 0) {
    text += fmt::format(", {} validations, best validation loss {:.4f} at step {}", validations, best, best_step);
  }
  return text;
}

}  // namespace

std::string training_section_html(const RunRecord& run) {
  std::string html;
  for (const auto& c : run.training) {
    if (c.points.empty()) continue;
    html += fmt::format("<section class=\"training\" id=\"training-{0}\"><h2>Training: {0}</h2>",
                        html_escape(c.stage));
    html += "<p class=\"training-summary\">" + html_escape(summary(c)) + "</p><div class=\"charts\">";
    LineChart loss;
    loss.title = "Loss";
    loss.x_title = "step";
    loss.y_title = "loss (nats per token)";
    LineSeries train{"training loss", "train-loss", {}, false, "#2563eb"};
    LineSeries val{"validation loss", "val-loss", {}, true, "#dc2626"};
    LineChart lr;
    lr.title = "Learning rate";
    lr.x_title = "step";
    lr.y_title = "learning rate";
    lr.y_from_zero = true;
    LineSeries lr_series{"learning rate", "lr", {}, false, "#16a34a"};
    for (const auto& p : c.points) {
      const double step = static_cast<double>(p.step);
      train.points.emplace_back(step, p.loss);
      if (p.val_loss) val.points.emplace_back(step, *p.val_loss);
      lr_series.points.emplace_back(step, p.lr);
    }
    loss.series.push_back(std::move(train));
    if (!val.points.empty()) loss.series.push_back(std::move(val));
    lr.series.push_back(std::move(lr_series));
    html += line_chart_svg(loss) + line_chart_svg(lr);
    html += "</div></section>\n";
  }
  return html;
}

std::string training_section_markdown(const RunRecord& run) {
  std::string md;
  for (const auto& c : run.training) {
    if (c.points.empty()) continue;
    if (md.empty()) md = "\n## Training\n\n";
    md += fmt::format("- **{}**: {}\n", markdown_cell(c.stage), summary(c));
  }
  return md;
}

}  // namespace llmopt::pipeline::report
