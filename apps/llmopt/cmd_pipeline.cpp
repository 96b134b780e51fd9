// Pipeline subcommands: run, validate, init, stages, report, compare (DESIGN.md "CLI contract").
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "apps/llmopt/commands.h"
#include "core/error.h"
#include "core/threads.h"
#include "io/atomic_file.h"
#include "pipeline/recipe.h"
#include "pipeline/report/atomic_write.h"
#include "pipeline/report/html_report.h"
#include "pipeline/report/report.h"
#include "pipeline/report/task_compare.h"
#include "pipeline/runner.h"
#include "pipeline/stages_doc.h"
#include "pipeline/templates.h"
#include "train/distributed.h"

namespace fs = std::filesystem;

namespace llmopt::cli {

namespace {

struct RunArgs {
  std::vector<std::string> args;  // RECIPE.yaml then overrides
  std::string out;
  std::string resume;
  std::string cache_dir;
  bool no_cache = false;
  bool json_events = false;
  int nproc = 1;
};

pipeline::BuildInfo build_info() {
  pipeline::BuildInfo b;
  b.version = LLMOPT_VERSION;
  b.git_commit = std::string(LLMOPT_GIT_COMMIT).empty() ? "unknown" : LLMOPT_GIT_COMMIT;
  b.build_type = LLMOPT_BUILD_TYPE;
  return b;
}

// `--nproc N` (N > 1): checks the recipe here, then runs N ranks of this command (data-parallel
// training in the stages that train; every rank runs every stage on its copy of the model, only
// rank 0 writes the run directory).
bool launch_ranks(const RunArgs& a, GlobalOptions& g) {
  LLMOPT_CHECK_INPUT(a.nproc >= 1, "[run] --nproc must be at least 1, found {}", a.nproc);
  if (a.nproc == 1) return false;
  if (a.resume.empty()) {
    LLMOPT_CHECK_INPUT(!a.args.empty(), "[run] missing RECIPE.yaml (or --resume DIR)");
    pipeline::RecipeLoadOptions lo;
    lo.overrides.assign(a.args.begin() + 1, a.args.end());
    const pipeline::Recipe recipe = pipeline::load_recipe(a.args[0], lo);
    LLMOPT_CHECK_INPUT(recipe.sweep.empty(), "[run] --nproc {}: a recipe with a sweep runs in one process", a.nproc);
  }
  train::dist::LaunchOptions lo;
  lo.nproc = a.nproc;
  lo.argv = train::dist::strip_nproc(train::dist::self_argv());
  lo.threads_per_rank = g.threads > 0 ? 0 : std::max(1, default_threads() / a.nproc);
  g.exit_code = train::dist::launch_local(lo);
  return true;
}

void run_command(const RunArgs& a, GlobalOptions& g, int argc_hint) {
  if (launch_ranks(a, g)) return;
  // A rank of a data-parallel job: the stage cache is off (every rank must run the training
  // stages), and ranks > 0 run into a scratch directory (a copy of the run directory to resume).
  const train::dist::ProcessGroup* group = train::dist::init_from_environment();
  const int rank = group ? group->rank() : 0;
  std::unique_ptr<train::dist::ScratchDir> scratch;
  RunArgs mine = a;
  if (rank > 0) {
    train::dist::quiet_logs_off_rank0();
    scratch = std::make_unique<train::dist::ScratchDir>(fmt::format("run-rank{}", rank));
    mine.out = (fs::path(scratch->path()) / "run").string();
    mine.json_events = false;
    if (!a.resume.empty()) {
      LLMOPT_CHECK_INPUT(fs::is_directory(a.resume), "[run] --resume {}: no such directory", a.resume);
      fs::copy(a.resume, mine.out, fs::copy_options::recursive);
      mine.resume = mine.out;
    }
  }
  const RunArgs& b = mine;
  pipeline::RunOptions o;
  o.out_dir = b.out;
  o.use_cache = !b.no_cache;
  o.cache_dir = b.cache_dir;
  o.quiet = g.quiet;
  o.json_events = b.json_events;
  o.threads = g.threads;
  o.build = build_info();
  o.command_line = b.args;
  o.write_reports = [](const std::string& dir) { pipeline::report::write_reports(dir); };
  if (group) {
    o.use_cache = false;
  }
  if (rank > 0) {
    o.quiet = true;
    o.write_reports = nullptr;
  }
  pipeline::RunOutcome outcome;
  if (!b.resume.empty()) {
    LLMOPT_CHECK_INPUT(b.args.empty(),
                       "[run] --resume continues a run from its config.resolved.yaml; do not give "
                       "a recipe or overrides with it");
    outcome = pipeline::resume_run(b.resume, o);
  } else {
    LLMOPT_CHECK_INPUT(!b.args.empty(), "[run] missing RECIPE.yaml (or --resume DIR)");
    pipeline::RecipeLoadOptions lo;
    lo.overrides.assign(b.args.begin() + 1, b.args.end());
    const pipeline::Recipe recipe = pipeline::load_recipe(b.args[0], lo);
    LLMOPT_CHECK_INPUT(!group || recipe.sweep.empty(), "[run] a recipe with a sweep runs in one process, not {} ranks",
                       group ? group->size() : 1);
    outcome = pipeline::run_recipe(recipe, o);
  }
  g.exit_code = outcome.exit_code;
  if (rank > 0) {
    if (outcome.status != "ok") std::fprintf(stderr, "error: [run] rank %d: %s\n", rank, outcome.error.c_str());
    return;
  }
  const fs::path report = fs::path(outcome.run_dir) / "report.html";
  if (outcome.status == "ok") {
    if (!b.json_events) {
      std::printf("run directory: %s\n", outcome.run_dir.c_str());
      if (fs::exists(report)) std::printf("report: %s\n", report.c_str());
    }
  } else {
    std::fprintf(stderr, "error: [run] %s\n", outcome.error.c_str());
    std::fprintf(stderr, "run directory: %s%s\n", outcome.run_dir.c_str(),
                 outcome.status == "interrupted" ? " (continue with --resume)" : "");
    if (fs::exists(report)) std::fprintf(stderr, "report: %s\n", report.c_str());
  }
  g.exit_code = outcome.exit_code;
  (void)argc_hint;
}

}  // namespace

void register_pipeline_commands(CLI::App& app, GlobalOptions& g) {
  // ---- run
  auto run_args = std::make_shared<RunArgs>();
  CLI::App* run = app.add_subcommand("run", "Run a recipe: llmopt run RECIPE.yaml [key=value ...]");
  run->add_option("args", run_args->args, "RECIPE.yaml followed by overrides (a.b=v, +a.b=v, ~a.b)");
  run->add_option("--out", run_args->out, "Run directory (overrides output.dir)");
  run->add_option("--resume", run_args->resume, "Continue the run in DIR after its last completed stage");
  run->add_flag("--no-cache", run_args->no_cache, "Do not reuse or store cached stage results");
  run->add_option("--cache-dir", run_args->cache_dir, "Stage cache (default: $LLMOPT_CACHE_DIR or ~/.cache/llmopt/stages)");
  run->add_flag("--json-events", run_args->json_events, "Print run events as JSON lines on stdout");
  run->add_option("--nproc", run_args->nproc,
                  "Data-parallel processes on this machine (Gloo) for the training stages; each rank runs the "
                  "pipeline, rank 0 writes the run directory")
      ->capture_default_str();
  run->add_flag("-q,--quiet", g.quiet, "No progress output");
  run->callback([run_args, &g]() {
    apply_threads(g);
    run_command(*run_args, g, 0);
  });

  // ---- validate
  auto val_args = std::make_shared<std::vector<std::string>>();
  auto val_print = std::make_shared<bool>(false);
  CLI::App* validate = app.add_subcommand("validate", "Check a recipe (exit 0 ok, 2 with FILE:LINE:COLUMN errors)");
  validate->add_option("args", *val_args, "RECIPE.yaml followed by overrides")->required();
  validate->add_flag("--print", *val_print, "Print the resolved recipe");
  validate->callback([val_args, val_print, &g]() {
    apply_threads(g);
    pipeline::RecipeLoadOptions lo;
    lo.overrides.assign(val_args->begin() + 1, val_args->end());
    const pipeline::Recipe r = pipeline::load_recipe((*val_args)[0], lo);
    if (*val_print) {
      std::fputs(r.tree.to_yaml().c_str(), stdout);
    } else {
      size_t points = r.sweep.empty() ? 0 : 1;
      for (const auto& a : r.sweep) points *= a.values.size();
      std::printf("ok: %s (%zu stage%s%s)\n", (*val_args)[0].c_str(), r.stages.size(),
                  r.stages.size() == 1 ? "" : "s",
                  points ? (", sweep of " + std::to_string(points) + " points").c_str() : "");
    }
  });

  // ---- init
  auto init_template = std::make_shared<std::string>("basic");
  auto init_path = std::make_shared<std::string>("recipe.yaml");
  auto init_force = std::make_shared<bool>(false);
  auto init_list = std::make_shared<bool>(false);
  CLI::App* init = app.add_subcommand("init", "Write a commented starter recipe");
  init->add_option("--template", *init_template, "Template name (--list shows them)");
  init->add_option("path", *init_path, "Where to write it (default recipe.yaml)");
  init->add_flag("--force", *init_force, "Overwrite an existing file");
  init->add_flag("--list", *init_list, "List the templates");
  init->callback([=, &g]() {
    apply_threads(g);
    if (*init_list) {
      for (const auto& t : pipeline::list_templates())
        std::printf("%-12s %s\n", t.name.c_str(), t.summary.c_str());
      return;
    }
    const std::string text = pipeline::template_text(*init_template);
    LLMOPT_CHECK_INPUT(*init_force || !fs::exists(*init_path),
                       "[init] {} already exists (use --force to overwrite)", *init_path);
    if (fs::path(*init_path).has_parent_path()) fs::create_directories(fs::path(*init_path).parent_path());
    io::write_file_atomic(*init_path, text);
    std::printf("wrote %s (template '%s'); check it with: llmopt validate %s\n", init_path->c_str(),
                init_template->c_str(), init_path->c_str());
  });

  // ---- stages
  auto stages_md = std::make_shared<bool>(false);
  auto stages_js = std::make_shared<std::string>();
  CLI::App* stages_cmd = app.add_subcommand("stages", "List registered stages and their options");
  stages_cmd->add_flag("--markdown", *stages_md, "Print the recipe reference (docs/recipes.md)");
  stages_cmd->add_option("--json", *stages_js, "Write the stages as JSON here ('-' = stdout, instead of the text)");
  stages_cmd->callback([=, &g]() {
    apply_threads(g);
    const auto& reg = stages::builtin_registry();
    if (!stages_js->empty()) write_json_output(*stages_js, pipeline::stages_json(reg));
    if (*stages_js == "-") return;
    if (*stages_md) std::fputs(pipeline::recipe_reference_markdown(reg).c_str(), stdout);
    else std::fputs(pipeline::stages_text(reg).c_str(), stdout);
  });

  // ---- report
  auto report_dir = std::make_shared<std::string>();
  CLI::App* report = app.add_subcommand("report", "Regenerate report.md and report.html of a run directory");
  report->add_option("dir", *report_dir, "Run directory")->required();
  report->callback([=, &g]() {
    apply_threads(g);
    pipeline::report::write_reports(*report_dir);
    std::printf("report: %s\n", (fs::path(*report_dir) / "report.html").c_str());
  });

  // ---- compare
  auto compare_dirs = std::make_shared<std::vector<std::string>>();
  auto compare_json = std::make_shared<std::string>();
  auto compare_html = std::make_shared<std::string>();
  CLI::App* compare = app.add_subcommand(
      "compare", "Tabulate runs side by side (Markdown): every evaluated model, task scores with standard errors "
                 "and significant deltas vs the first run's baseline");
  compare->add_option("dirs", *compare_dirs, "Run directories")->required();
  compare->add_option("--json", *compare_json, "Write the comparison as JSON to this file (- = stdout)");
  compare->add_option("--html", *compare_html, "Write an HTML page with the tables and quality-vs-size/speed charts");
  compare->callback([=, &g]() {
    apply_threads(g);
    const auto points = pipeline::report::compare_points(*compare_dirs);
    if (*compare_json == "-") {
      std::fputs((pipeline::report::compare_runs_json(points).dump(2) + "\n").c_str(), stdout);
    } else {
      std::fputs(pipeline::report::compare_table(*compare_dirs).c_str(), stdout);
      std::fputs(("\n" + pipeline::report::compare_runs_markdown(points)).c_str(), stdout);
      if (!compare_json->empty())
        pipeline::report::write_file_atomically(*compare_json, pipeline::report::compare_runs_json(points).dump(2) + "\n");
    }
    if (!compare_html->empty())
      pipeline::report::write_file_atomically(
          *compare_html, pipeline::report::compare_runs_html(points, pipeline::report::report_style()));
  });
}

}  // namespace llmopt::cli
