// The parts of a run directory a report is made from: metrics.json (parsed into records),
// manifest.json (kept as JSON and rendered generically) and config.resolved.yaml (kept as text).
#pragma once
#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace llmopt::pipeline::report {

// One entry of metrics.json "stages". Every field but name/type/status may be absent.
struct StageRecord {
  int index = 0;
  std::string name;
  std::string type;
  std::string status;  // ok | failed | cached | skipped (rendered as found otherwise)
  std::string error;   // empty unless the stage failed
  std::optional<double> wall_s;          // absent for skipped stages (never started)
  std::optional<double> peak_rss_bytes;  // absent for skipped stages
  std::map<std::string, double> metrics;            // numeric metrics, by snake_case key
  std::map<std::string, std::string> text_metrics;  // anything non-numeric, as JSON text
  std::vector<std::string> artifacts;               // paths relative to the run directory
};

// One entry of metrics.json "sweep": a sub-run with its own stages.
struct SweepRecord {
  std::string name;  // "bits=2,group_size=32"
  std::string dir;   // relative to the run directory
  std::string status;
  std::string error;  // a failure outside any stage (e.g. a bad override), empty otherwise
  nlohmann::json overrides = nlohmann::json::object();  // dotted path -> value
  std::vector<StageRecord> stages;
};

// One `train_step` event of events.jsonl (src/stages/finetune): the optimizer step's training
// loss and learning rate, and the validation loss when the step validated.
struct TrainPoint {
  long step = 0;
  double loss = 0;
  double lr = 0;
  std::optional<double> val_loss;
};

// The training curve of one finetune stage, in step order (a step logged twice, as after a
// resumed stage, keeps its last record).
struct TrainCurve {
  int index = 0;      // the stage's index in the pipeline
  std::string stage;  // the stage's name
  std::vector<TrainPoint> points;
};

struct RunRecord {
  std::string dir;  // the run directory on disk (empty when parsed from memory)
  std::string name;
  std::string status;  // ok | failed | interrupted
  // Why the run stopped when no stage says so (e.g. the model failed to load): "run.error" of
  // metrics.json, else the "error" of the last run_end event in events.jsonl.
  std::string error;
  std::vector<StageRecord> stages;  // in sweep runs: the shared baseline evaluation
  std::vector<SweepRecord> sweep;   // empty unless this is a sweep run
  bool is_sweep = false;
  nlohmann::json manifest;                 // null when manifest.json is missing
  std::optional<std::string> config_yaml;  // config.resolved.yaml, verbatim
  std::vector<TrainCurve> training;        // train_step events of events.jsonl, by stage index
};

// Parses the metrics.json document. `source` names the file in error messages.
// Throws InputError ("[report] <source>: ...") when the document is not the documented schema.
RunRecord parse_metrics(const nlohmann::json& metrics, const std::string& source);

// Reads DIR/metrics.json (required), DIR/manifest.json, DIR/config.resolved.yaml and
// DIR/events.jsonl (optional: a run that failed early may lack them). Throws InputError naming the file on unreadable or
// malformed input.
RunRecord load_run(const std::string& run_dir);

// The training curves in an events.jsonl text. Lines that are not JSON objects, other events and
// train_step events without a numeric step, loss and lr are skipped (the log is a diagnostic aid).
std::vector<TrainCurve> parse_train_events(const std::string& events_jsonl);

// Sum of the wall times of every stage, sweep sub-runs included, seconds.
double total_wall_seconds(const RunRecord& run);

}  // namespace llmopt::pipeline::report
