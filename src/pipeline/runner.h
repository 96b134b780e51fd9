// The runner: executes a validated recipe into a run directory (DESIGN.md "Recipe").
//
//   RUN_DIR/config.resolved.yaml   the recipe after composition, overrides and interpolation
//   RUN_DIR/manifest.json          llmopt version/commit/build type, inputs with sha256 and size,
//                                  seed, threads, host CPU, start/end times, status
//   RUN_DIR/metrics.json           per-stage metrics (schema in docs/pipeline.md)
//   RUN_DIR/events.jsonl           what happened, one JSON object per line
//   RUN_DIR/artifacts/             files the stages wrote (exports)
//   RUN_DIR/state/stage-<i>/       done.json (written last) and, for stages that change the model,
//                                  the model exactly as stored (model/state_io.h: packed blocks,
//                                  adapters, masks in their own dtypes): `--resume` restarts
//                                  after the last stage with a done.json
//   RUN_DIR/sweep/NNN-<point>/     sub-runs of a sweep, each a run directory of its own
//   RUN_DIR/report.md, report.html written by the report renderer at the end
// Every file is written atomically (temporary file + rename).
#pragma once
#include <nlohmann/json.hpp>

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "pipeline/recipe.h"
#include "pipeline/run_dir.h"

namespace llmopt::pipeline {

struct RunOptions {
  std::string out_dir;     // --out: overrides output.dir
  bool use_cache = true;   // --no-cache sets false (output.cache: false too)
  std::string cache_dir;   // "" = default_cache_dir()
  bool quiet = false;
  bool json_events = false;  // events as JSON lines on stdout
  int threads = 0;           // --threads; 0 = the recipe's `threads`, then the default
  BuildInfo build;
  std::vector<std::string> command_line;  // recorded in the manifest
  // Flag polled by stages; null = install the SIGINT/SIGTERM handler and use its flag.
  std::atomic<bool>* interrupt = nullptr;
  // Stage registry for resumed runs and sweep points (null = the built-in one); a recipe loaded
  // with a registry of its own runs with the same one.
  const stages::Registry* registry = nullptr;
  // Writes report.md/report.html for a finished run directory (failures are warnings).
  std::function<void(const std::string& run_dir)> write_reports;
};

struct RunOutcome {
  std::string run_dir;
  std::string status;  // ok | failed | interrupted
  int exit_code = 0;   // 0 ok, 1 a stage failed, 2 bad input, 130 interrupted
  std::string error;
  nlohmann::json metrics;
};

RunOutcome run_recipe(const Recipe& recipe, const RunOptions& options);
// Continues the run in `run_dir` (from its config.resolved.yaml) after its last completed stage.
RunOutcome resume_run(const std::string& run_dir, const RunOptions& options);

// The number of leading stages a sweep's sub-runs share (no swept key touches them).
size_t shared_prefix_length(const Recipe& recipe);

}  // namespace llmopt::pipeline
