#include "core/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace llmopt {

Progress::Mode Progress::detect(bool quiet) {
  if (quiet) return Mode::Quiet;
  return ::isatty(STDERR_FILENO) ? Mode::Tty : Mode::Lines;
}

Progress::Progress(Mode mode, double line_period_s) : mode_(mode), line_period_s_(line_period_s) {}

std::string Progress::human_count(double v) {
  if (v >= 1e9) return fmt::format("{:.1f}G", v / 1e9);
  if (v >= 1e6) return fmt::format("{:.1f}M", v / 1e6);
  if (v >= 1e3) return fmt::format("{:.1f}k", v / 1e3);
  if (v >= 10 || v == std::floor(v)) return fmt::format("{:.0f}", v);
  return fmt::format("{:.1f}", v);
}

std::string Progress::human_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(std::llround(s));
  if (t >= 3600) return fmt::format("{}:{:02}:{:02}", t / 3600, (t / 60) % 60, t % 60);
  return fmt::format("{}:{:02}", t / 60, t % 60);
}

std::string Progress::render(const std::string& label, int64_t done, int64_t total,
                             const std::string& unit, double rate, double eta_s, int width) {
  std::string out = label;
  if (total > 0) {
    const double frac = std::clamp(static_cast<double>(done) / static_cast<double>(total), 0.0, 1.0);
    const int filled = static_cast<int>(std::floor(frac * width));
    out += fmt::format(" [{}{}] {:3.0f}%", std::string(filled, '#'), std::string(width - filled, ' '),
                       frac * 100);
  } else if (done > 0) {
    out += fmt::format(" {} {}", human_count(static_cast<double>(done)), unit);
  }
  if (rate > 0) out += fmt::format(" {} {}/s", human_count(rate), unit);
  if (total > 0 && eta_s >= 0 && done < total) out += " ETA " + human_duration(eta_s);
  return out;
}

void Progress::begin_stage(const std::string& prefix, int index, int total, const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string tag = prefix.empty() ? "" : "[" + prefix + "] ";
  // total <= 0: a step outside the pipeline's stages (building the quickstart model).
  label_ = total > 0 ? fmt::format("{}stage {}/{} {}", tag, index + 1, total, name) : tag + name;
  note_.clear();
  done_ = total_ = 0;
  unit_.clear();
  stage_start_ = last_draw_ = std::chrono::steady_clock::now();
  if (mode_ == Mode::Lines) std::fprintf(stderr, "%s ...\n", label_.c_str());
  draw_locked(true);
}

void Progress::update(int64_t done, int64_t total, const std::string& unit) {
  std::lock_guard<std::mutex> lock(mu_);
  // Counts restart when a stage moves to its next phase (perplexity -> bench); so do rates.
  if (unit != unit_) stage_start_ = std::chrono::steady_clock::now();
  done_ = done;
  total_ = total;
  unit_ = unit;
  draw_locked(false);
}

void Progress::note(const std::string& text) {
  std::lock_guard<std::mutex> lock(mu_);
  note_ = text;
  draw_locked(false);
}

void Progress::line(const std::string& text) {
  std::lock_guard<std::mutex> lock(mu_);
  if (mode_ == Mode::Quiet) return;
  clear_locked();
  std::fprintf(stderr, "%s\n", text.c_str());
}

void Progress::end_stage() {
  std::lock_guard<std::mutex> lock(mu_);
  clear_locked();
}

void Progress::clear_locked() {
  if (mode_ == Mode::Tty && drawn_) std::fputs("\r\033[2K", stderr);
  drawn_ = false;
}

void Progress::draw_locked(bool force) {
  if (mode_ == Mode::Quiet) return;
  const auto now = std::chrono::steady_clock::now();
  const double since_draw = std::chrono::duration<double>(now - last_draw_).count();
  const double period = mode_ == Mode::Tty ? 0.1 : line_period_s_;
  if (!force && since_draw < period) return;
  if (mode_ == Mode::Lines && force) return;  // the "..." line was just printed
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - stage_start_).count();
  const double rate = elapsed > 0 && done_ > 0 ? static_cast<double>(done_) / elapsed : 0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done_) / rate : -1;
  std::string text = render(label_, done_, total_, unit_, rate, eta, 24);
  if (!note_.empty()) text += " (" + note_ + ")";
  if (mode_ == Mode::Tty) {
    std::fprintf(stderr, "\r\033[2K%s", text.c_str());
    drawn_ = true;
  } else {
    std::fprintf(stderr, "%s\n", text.c_str());
  }
  std::fflush(stderr);
}

}  // namespace llmopt
