// Recipes (DESIGN.md "Recipe"): loading with `defaults:` composition, command-line overrides,
// interpolation and validation against the options declarations, before any work starts.
//
// Order of resolution:
//   1. the recipe file and, depth first, every file its `defaults:` lists (searched beside the
//      including file, then in ./configs and the source tree's configs/) are deep-merged in order,
//      the including file last; cycles are errors;
//   2. overrides `a.b=v` (set), `+a.b=v` (add), `~a.b` (delete), in command-line order;
//   3. built-in defaults that other values refer to (`name`, `output.dir`);
//   4. `${a.b}`, `${env:NAME}`, `${timestamp}` interpolation;
//   5. validation of every section and stage (types, ranges, choices, files, unknown keys).
// Every problem is reported as "FILE:LINE:COLUMN: message"; overrides count as lines of a file
// named "<override>" (the N-th override is line N, columns count from its first character).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "stages/config_node.h"
#include "stages/data_config.h"
#include "stages/diagnostics.h"
#include "stages/options.h"
#include "stages/registry.h"

namespace llmopt::pipeline {

using stages::ConfigNode;
using stages::Diagnostics;
using stages::Schema;
using stages::SourceLoc;

struct ModelOptions {
  std::string path;
  std::string tokenizer;
  int64_t quickstart_steps = 0;

  static void describe(Schema<ModelOptions>& s) {
    s.field("path", &ModelOptions::path,
            "Model to start from: HF directory, .gguf or llama2.c .bin (empty = build the "
            "quickstart model)")
        .existing_path();
    s.field("tokenizer", &ModelOptions::tokenizer,
            "Tokenizer file when the model has none (llama2.c tokenizer.bin, tokenizer.json, .model)")
        .existing_path();
    s.field("quickstart_steps", &ModelOptions::quickstart_steps,
            "Training steps of the quickstart model when path is empty (0 = its default)")
        .range(0, 1e7);
  }
};

struct OutputOptions {
  std::string dir = "runs/${name}-${timestamp}";
  bool cache = true;
  bool reports = true;

  static void describe(Schema<OutputOptions>& s) {
    s.field("dir", &OutputOptions::dir, "Run directory (created; must not exist or be empty)");
    s.field("cache", &OutputOptions::cache,
            "Reuse results of an unchanged prefix of stages from the stage cache");
    s.field("reports", &OutputOptions::reports, "Write report.md and report.html at the end");
  }
};

// Top-level recipe sections (everything but the pipeline list and the sweep, declared as custom
// keys so validation and docs know them).
struct RecipeOptions {
  std::string name;
  int64_t seed = 0;
  int64_t threads = 0;
  ModelOptions model;
  stages::DataOptions data;
  OutputOptions output;
  int64_t sweep_parallel = 1;

  static void describe(Schema<RecipeOptions>& s) {
    s.custom("defaults", "list of recipe names",
             "Recipes merged before this one, in order (beside this file, then configs/)", "[]");
    s.field("name", &RecipeOptions::name, "Run name (default: the recipe file name)");
    s.field("seed", &RecipeOptions::seed, "Seed of every random choice").range(0, 9.2e18);
    s.field("threads", &RecipeOptions::threads, "Threads (0 = --threads, LLMOPT_THREADS or all)")
        .range(0, 4096);
    s.field("model", &RecipeOptions::model, "The input model");
    s.field("data", &RecipeOptions::data, "Data sets used by stages");
    s.custom("pipeline", "list of stages", "Stages run in order; each has `type:` and options");
    s.field("output", &RecipeOptions::output, "Where and how the run is recorded");
    s.custom("sweep", "mapping of override path to list",
             "Run the product of these settings as sub-runs, e.g. {pipeline.1.bits: [2, 4]}");
    s.field("sweep_parallel", &RecipeOptions::sweep_parallel,
            "Sub-runs of a sweep run at the same time (threads are split between them)")
        .range(1, 256);
  }
};

struct StageEntry {
  std::string name;
  std::string type;
  std::shared_ptr<stages::Stage> stage;
  SourceLoc loc;
};

struct SweepAxis {
  std::string path;  // override path, e.g. "pipeline.1.bits"
  SourceLoc loc;
  std::vector<ConfigNode> values;
};

struct Recipe {
  std::string path;                         // the recipe file given by the user
  std::vector<std::string> composed_files;  // every recipe file merged, defaults first
  ConfigNode tree;                          // resolved (composed, overridden, interpolated)
  RecipeOptions options;
  std::vector<StageEntry> stages;
  std::vector<SweepAxis> sweep;
  std::string timestamp;
};

struct RecipeLoadOptions {
  std::vector<std::string> overrides;
  std::string timestamp;  // value of ${timestamp}; empty = now (UTC, YYYYmmdd-HHMMSS)
  const stages::Registry* registry = nullptr;  // null = the built-in registry
  std::vector<std::string> search_dirs;        // extra directories for `defaults:` lookups
};

// Throws InputError listing every problem ("[recipe] FILE:LINE:COLUMN: ...").
Recipe load_recipe(const std::string& path, const RecipeLoadOptions& options = {});
// Validates an already resolved tree (a sweep point, a resumed run's config.resolved.yaml).
Recipe recipe_from_tree(ConfigNode tree, const std::string& path, const RecipeLoadOptions& options);

// ---- building blocks (exposed for tests) ----
// Merges `path` with its defaults; `files` receives every file read, in merge order.
ConfigNode compose_recipe(const std::string& path, const std::vector<std::string>& search_dirs,
                          std::vector<std::string>& files);
// Applies one override ("a.b=1", "+a.c=x", "~a.d"); `index` is 1-based (its <override> line).
void apply_override(ConfigNode& tree, const std::string& text, int index, Diagnostics& diag);
// Sets `path` (dotted, numeric segments index lists) to `value`; Add creates missing maps and
// appends at index == size; Set requires the parent to exist.
enum class SetMode { Set, Add };
bool set_path(ConfigNode& tree, const std::string& path, ConfigNode value, SetMode mode,
              const SourceLoc& loc, Diagnostics& diag);
void interpolate(ConfigNode& tree, const std::string& timestamp, Diagnostics& diag);
std::string utc_timestamp();
// A one-line "key=value,key=value" name and a directory-safe variant of a sweep point.
std::string sweep_point_name(const std::vector<std::pair<std::string, ConfigNode>>& point);

}  // namespace llmopt::pipeline
