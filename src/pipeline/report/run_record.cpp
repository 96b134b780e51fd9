#include "pipeline/report/run_record.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <utility>
#include <sstream>

#include "core/error.h"

namespace llmopt::pipeline::report {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string type_name(const json& value) { return value.type_name(); }

// Reads an optional string member; absent or null gives `fallback`.
std::string string_member(const json& object, const char* key, const std::string& where,
                          const std::string& fallback = "") {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  LLMOPT_CHECK_INPUT(it->is_string(), "[report] {}: '{}' must be a string, found {}", where, key,
                     type_name(*it));
  return it->get<std::string>();
}

std::optional<double> number_member(const json& object, const char* key, const std::string& where) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  LLMOPT_CHECK_INPUT(it->is_number(), "[report] {}: '{}' must be a number, found {}", where, key,
                     type_name(*it));
  return it->get<double>();
}

StageRecord parse_stage(const json& stage, const std::string& where, int position) {
  LLMOPT_CHECK_INPUT(stage.is_object(), "[report] {}: expected an object, found {}", where,
                     type_name(stage));
  StageRecord record;
  const auto index = number_member(stage, "index", where);
  record.index = index ? static_cast<int>(*index) : position;
  record.name = string_member(stage, "name", where);
  record.type = string_member(stage, "type", where);
  record.status = string_member(stage, "status", where, "unknown");
  record.error = string_member(stage, "error", where);
  record.wall_s = number_member(stage, "wall_s", where);
  record.peak_rss_bytes = number_member(stage, "peak_rss_bytes", where);
  if (record.status == "skipped") {
    // The runner writes 0 placeholders for stages it never started; they are not measurements.
    record.wall_s.reset();
    record.peak_rss_bytes.reset();
  }
  if (const auto it = stage.find("metrics"); it != stage.end() && !it->is_null()) {
    LLMOPT_CHECK_INPUT(it->is_object(), "[report] {}: 'metrics' must be an object, found {}",
                       where, type_name(*it));
    for (const auto& [key, value] : it->items()) {
      if (value.is_null()) continue;  // a metric that could not be computed (e.g. NaN)
      if (value.is_number()) {
        record.metrics[key] = value.get<double>();
      } else if (value.is_string()) {
        record.text_metrics[key] = value.get<std::string>();
      } else {
        record.text_metrics[key] = value.dump();
      }
    }
  }
  if (const auto it = stage.find("artifacts"); it != stage.end() && !it->is_null()) {
    LLMOPT_CHECK_INPUT(it->is_array(), "[report] {}: 'artifacts' must be an array, found {}",
                       where, type_name(*it));
    for (const auto& artifact : *it) {
      LLMOPT_CHECK_INPUT(artifact.is_string(),
                         "[report] {}: 'artifacts' entries must be strings, found {}", where,
                         type_name(artifact));
      record.artifacts.push_back(artifact.get<std::string>());
    }
  }
  return record;
}

std::vector<StageRecord> parse_stages(const json& parent, const std::string& where) {
  std::vector<StageRecord> stages;
  const auto it = parent.find("stages");
  if (it == parent.end() || it->is_null()) return stages;
  LLMOPT_CHECK_INPUT(it->is_array(), "[report] {}: 'stages' must be an array, found {}", where,
                     type_name(*it));
  for (size_t i = 0; i < it->size(); ++i) {
    stages.push_back(
        parse_stage((*it)[i], where + " stages[" + std::to_string(i) + "]", static_cast<int>(i)));
  }
  return stages;
}

std::optional<std::string> read_text_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  LLMOPT_CHECK_INPUT(!in.bad(), "[report] {}: read error", path.string());
  return text.str();
}

json parse_json_file(const fs::path& path, const std::string& text) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw_input("[report] {}: malformed JSON: {}", path.string(), e.what());
  }
}

// The events log is a diagnostic aid here, not a contract: lines that are not JSON objects (a
// line cut short by a crash) are skipped rather than failing the report.
std::string last_run_end_error(const std::string& events) {
  std::string error;
  std::istringstream lines(events);
  for (std::string line; std::getline(lines, line);) {
    const json event = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!event.is_object() || event.value("event", json()) != "run_end") continue;
    const auto it = event.find("error");
    error = it != event.end() && it->is_string() ? it->get<std::string>() : "";
  }
  return error;
}

}  // namespace

RunRecord parse_metrics(const json& metrics, const std::string& source) {
  LLMOPT_CHECK_INPUT(metrics.is_object(), "[report] {}: expected a JSON object, found {}", source,
                     type_name(metrics));
  RunRecord run;
  if (const auto it = metrics.find("run"); it != metrics.end() && !it->is_null()) {
    LLMOPT_CHECK_INPUT(it->is_object(), "[report] {}: 'run' must be an object, found {}", source,
                       type_name(*it));
    run.name = string_member(*it, "name", source + " run");
    run.dir = string_member(*it, "dir", source + " run");
    run.status = string_member(*it, "status", source + " run", "unknown");
    run.error = string_member(*it, "error", source + " run");
  } else {
    run.status = "unknown";
  }
  run.stages = parse_stages(metrics, source);
  if (const auto it = metrics.find("sweep"); it != metrics.end() && !it->is_null()) {
    LLMOPT_CHECK_INPUT(it->is_array(), "[report] {}: 'sweep' must be an array, found {}", source,
                       type_name(*it));
    run.is_sweep = true;
    for (size_t i = 0; i < it->size(); ++i) {
      const json& point = (*it)[i];
      const std::string where = source + " sweep[" + std::to_string(i) + "]";
      LLMOPT_CHECK_INPUT(point.is_object(), "[report] {}: expected an object, found {}", where,
                         type_name(point));
      SweepRecord record;
      record.name = string_member(point, "name", where, "point " + std::to_string(i));
      record.dir = string_member(point, "dir", where);
      record.status = string_member(point, "status", where, "unknown");
      record.error = string_member(point, "error", where);
      if (const auto o = point.find("overrides"); o != point.end() && !o->is_null()) {
        LLMOPT_CHECK_INPUT(o->is_object(), "[report] {}: 'overrides' must be an object, found {}",
                           where, type_name(*o));
        record.overrides = *o;
      }
      record.stages = parse_stages(point, where);
      run.sweep.push_back(std::move(record));
    }
  }
  return run;
}

RunRecord load_run(const std::string& run_dir) {
  const fs::path dir(run_dir);
  const fs::path metrics_path = dir / "metrics.json";
  const auto metrics_text = read_text_file(metrics_path);
  LLMOPT_CHECK_INPUT(metrics_text.has_value(),
                     "[report] {}: cannot open metrics.json (is '{}' a run directory?)",
                     metrics_path.string(), run_dir);
  RunRecord run = parse_metrics(parse_json_file(metrics_path, *metrics_text), metrics_path.string());
  run.dir = run_dir;

  const fs::path manifest_path = dir / "manifest.json";
  if (const auto manifest_text = read_text_file(manifest_path)) {
    run.manifest = parse_json_file(manifest_path, *manifest_text);
  }
  run.config_yaml = read_text_file(dir / "config.resolved.yaml");
  if (const auto events = read_text_file(dir / "events.jsonl")) {
    if (run.error.empty()) run.error = last_run_end_error(*events);
    run.training = parse_train_events(*events);
  }
  if (run.name.empty()) {
    const fs::path normal = dir.lexically_normal();
    run.name = (normal.has_filename() ? normal : normal.parent_path()).filename().string();
  }
  return run;
}

std::vector<TrainCurve> parse_train_events(const std::string& events_jsonl) {
  std::map<std::pair<int, std::string>, std::map<long, TrainPoint>> by_stage;
  std::istringstream lines(events_jsonl);
  for (std::string line; std::getline(lines, line);) {
    const json e = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!e.is_object() || e.value("event", json()) != "train_step") continue;
    const auto number = [&](const char* key) -> std::optional<double> {
      const auto it = e.find(key);
      if (it == e.end() || !it->is_number()) return std::nullopt;
      return it->get<double>();
    };
    const auto step = number("step"), loss = number("loss"), lr = number("lr");
    if (!step || !loss || !lr) continue;
    const auto index = number("index");
    const auto name = e.find("name");
    const std::string stage = name != e.end() && name->is_string() ? name->get<std::string>() : "";
    TrainPoint p;
    p.step = static_cast<long>(*step);
    p.loss = *loss;
    p.lr = *lr;
    p.val_loss = number("val_loss");
    by_stage[{index ? static_cast<int>(*index) : 0, stage}][p.step] = p;
  }
  std::vector<TrainCurve> curves;
  for (auto& [key, steps] : by_stage) {
    TrainCurve c;
    c.index = key.first;
    c.stage = key.second;
    for (auto& [s, p] : steps) c.points.push_back(p);
    curves.push_back(std::move(c));
  }
  return curves;
}

double total_wall_seconds(const RunRecord& run) {
  double total = 0;
  for (const auto& stage : run.stages) total += stage.wall_s.value_or(0);
  for (const auto& point : run.sweep) {
    for (const auto& stage : point.stages) total += stage.wall_s.value_or(0);
  }
  return total;
}

}  // namespace llmopt::pipeline::report
