// Progress display for runs, on stderr. On a terminal one line is redrawn in place:
//   stage 2/4 evaluate [#########           ] 45% 1.2k tok/s ETA 0:12
// otherwise (logs, CI) one plain line every few seconds. Quiet mode prints nothing but errors.
// Thread-safe; sub-runs of a parallel sweep prefix their lines with their name.
#pragma once
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace llmopt {

class Progress {
 public:
  enum class Mode { Tty, Lines, Quiet };
  // Tty when stderr is a terminal, Lines otherwise; Quiet when quiet.
  static Mode detect(bool quiet);
  explicit Progress(Mode mode, double line_period_s = 5.0);

  void begin_stage(const std::string& prefix, int index, int total, const std::string& name);
  void update(int64_t done, int64_t total, const std::string& unit);
  void note(const std::string& text);
  // Prints a whole line (clears the bar first), e.g. "stage 1/3 baseline ok in 2.1 s".
  void line(const std::string& text);
  void end_stage();
  Mode mode() const { return mode_; }

  // "1.2k", "34", "5.6M".
  static std::string human_count(double v);
  // "0:12", "1:02:03".
  static std::string human_duration(double seconds);
  // The bar line for a state (exposed for tests).
  static std::string render(const std::string& label, int64_t done, int64_t total,
                            const std::string& unit, double rate, double eta_s, int width);

 private:
  void draw_locked(bool force);
  void clear_locked();

  Mode mode_;
  double line_period_s_;
  std::mutex mu_;
  std::string label_;
  std::string note_;
  int64_t done_ = 0, total_ = 0;
  std::string unit_;
  std::chrono::steady_clock::time_point stage_start_, last_draw_;
  bool drawn_ = false;
};

}  // namespace llmopt
