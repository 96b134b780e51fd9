#include "pipeline/events.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>

#include "io/atomic_file.h"

namespace llmopt::pipeline {

std::string iso_time_now() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(ms));
  return out;
}

EventLog::EventLog(std::string path, bool to_stdout) : path_(std::move(path)), to_stdout_(to_stdout) {
  std::ifstream in(path_);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) lines_.push_back(line);
}

void EventLog::emit(nlohmann::json event) {
  nlohmann::json ordered = {{"time", iso_time_now()}};
  ordered.update(event);
  const std::string line = ordered.dump();
  std::lock_guard<std::mutex> lock(mu_);
  lines_.push_back(line);
  std::string all;
  for (const auto& l : lines_) all += l + "\n";
  io::write_file_atomic(path_, all);
  if (to_stdout_) {
    std::fputs((line + "\n").c_str(), stdout);
    std::fflush(stdout);
  }
}

std::vector<nlohmann::json> EventLog::events() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<nlohmann::json> out;
  for (const auto& l : lines_) out.push_back(nlohmann::json::parse(l, nullptr, false));
  return out;
}

}  // namespace llmopt::pipeline
