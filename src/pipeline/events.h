// events.jsonl: one JSON object per line (run_start, stage_start, stage_end, error, run_end...),
// each with "time" (UTC ISO-8601) and "event". The whole file is rewritten atomically after every
// event, so after a crash it holds only whole lines. With --json-events every event is also
// printed to stdout as it happens.
#pragma once
#include <nlohmann/json.hpp>

#include <mutex>
#include <string>
#include <vector>

namespace llmopt::pipeline {

std::string iso_time_now();

class EventLog {
 public:
  // Keeps the lines of an existing events.jsonl (resumed runs append to it).
  EventLog(std::string path, bool to_stdout);
  void emit(nlohmann::json event);
  std::vector<nlohmann::json> events() const;

 private:
  std::string path_;
  bool to_stdout_;
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
};

}  // namespace llmopt::pipeline
