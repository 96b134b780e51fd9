// The stage contract (DESIGN.md "Core types"). A stage is built from its options (parsed and
// validated from the recipe before any work starts), checks that it can run on the incoming
// ModelState (validate), then transforms it (run) and reports metrics and artifacts.
#pragma once
#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "stages/data_config.h"
#include "stages/model_state.h"

namespace llmopt::stages {

// Thrown from a progress callback when the user pressed Ctrl-C; the runner stops cleanly.
class Interrupted : public RunError {
 public:
  Interrupted() : RunError("interrupted") {}
};

struct StageResult {
  // Metric name -> JSON number (perplexity, kld_mean, pp_tok_s, model_bytes ...).
  nlohmann::json metrics = nlohmann::json::object();
  // Files written, relative to the run directory ("artifacts/model.gguf").
  std::vector<std::string> artifacts;
  double wall_s = 0;           // filled by the runner
  int64_t peak_rss_bytes = 0;  // filled by the runner
};

// Everything a stage may use besides the model: where to write, the recipe's data section, the
// seed, progress reporting and the interrupt flag.
struct StageContext {
  std::string run_dir;        // absolute
  std::string artifacts_dir;  // absolute, exists
  int index = 0;              // position in the pipeline (0-based)
  int total = 1;
  std::string stage_name;
  uint64_t seed = 0;
  int threads = 1;
  const DataOptions* data = nullptr;
  // progress(done, total, unit): e.g. (1200, 5000, "tok"); total 0 = unknown.
  std::function<void(int64_t, int64_t, const std::string&)> progress;
  // A status line ("bench prefill 2/3").
  std::function<void(const std::string&)> note;
  // An event for the run's events.jsonl ({"event": "train_step", ...}); the runner adds the time
  // and the stage's index and name. May be empty (no run directory).
  std::function<void(const nlohmann::json&)> event;
  const std::atomic<bool>* interrupt_flag = nullptr;

  bool interrupted() const { return interrupt_flag && interrupt_flag->load(); }
  // Throws Interrupted when the user asked to stop; call it at safe points.
  void check_interrupted() const {
    if (interrupted()) throw Interrupted();
  }
  void report(int64_t done, int64_t total_units, const std::string& unit) const {
    if (progress) progress(done, total_units, unit);
    check_interrupted();
  }
};

class Stage {
 public:
  virtual ~Stage() = default;
  virtual std::string type() const = 0;
  // True if run() changes the weights or modules (quantize, prune, finetune); the runner then
  // keeps a separate baseline copy and checkpoints the model after the stage.
  virtual bool modifies_model() const { return false; }
  // Fails (InputError) before any work if the stage cannot run on `state` (e.g. export to
  // llama2c of a model with biases).
  virtual void validate(const ModelState& state) const {}
  virtual StageResult run(ModelState& state, StageContext& ctx) = 0;
  // Canonical options (for cache keys and the resolved recipe).
  virtual nlohmann::json options_json() const = 0;
  // Extra inputs that change the result (data files); their content hashes go into the cache key.
  virtual std::vector<std::string> input_files(const DataOptions& data) const { return {}; }
};

}  // namespace llmopt::stages
