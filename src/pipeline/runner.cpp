#include "pipeline/runner.h"

#include <sys/utsname.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "core/memory.h"
#include "core/threads.h"
#include "core/timer.h"
#include "io/atomic_file.h"
#include "io/sha256.h"
#include "model/loader.h"
#include "model/save.h"
#include "model/state_io.h"
#include "pipeline/cache.h"
#include "pipeline/events.h"
#include "pipeline/interrupt.h"
#include "core/progress.h"
#include "pipeline/quickstart_model.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace llmopt::pipeline {

namespace {

// Everything shared by a run and its sweep sub-runs.
struct Env {
  const RunOptions& options;
  InputHashes hashes;
  std::unique_ptr<StageCache> cache;
  std::atomic<bool>* interrupt = nullptr;
  std::unique_ptr<Progress> progress;
  int threads = 1;
  std::string default_eval_path;  // the quickstart model's held-out text, when it is used
  explicit Env(const RunOptions& o) : options(o) {}

  // The recipe's data section with defaults the run supplies filled in.
  stages::DataOptions data_for(const Recipe& r) const {
    stages::DataOptions d = r.options.data;
    if (d.eval.path.empty()) d.eval.path = default_eval_path;
    return d;
  }
};

// One run directory being written (the run itself or a sweep point).
struct RunDir {
  std::string dir;    // absolute
  std::string label;  // progress prefix ("" for the top-level run)
  std::unique_ptr<EventLog> events;
};

struct StagesOutcome {
  std::vector<json> entries;
  std::string status = "ok";  // ok | failed | interrupted
  std::string error;
  int exit_code = 0;
};

std::string rel_to(const std::string& path, const std::string& base) {
  return fs::relative(path, base).string();
}

void apply_thread_count(int n) {
  set_threads(n);
  torch::set_num_threads(n);
}

std::string stage_key(Env& env, const Recipe& r, const stages::DataOptions& data,
                      const StageEntry& s, const std::string& input_hash, int threads) {
  json k;
  k["v"] = 1;
  k["input"] = input_hash;
  k["type"] = s.type;
  k["options"] = s.stage->options_json();
  k["data"] = stages::schema_of<stages::DataOptions>().json(data);
  json files = json::array();
  for (const auto& f : s.stage->input_files(data)) files.push_back(env.hashes.digest(f));
  k["files"] = files;
  k["seed"] = r.options.seed;
  k["threads"] = threads;
  k["llmopt"] = env.options.build.version + "+" + env.options.build.git_commit;
  return io::sha256_hex(k.dump());
}

json stage_entry_base(size_t index, const StageEntry& s) {
  return json{{"index", index},        {"name", s.name},  {"type", s.type}, {"status", "skipped"},
              {"wall_s", 0.0},          {"peak_rss_bytes", 0}, {"metrics", json::object()},
              {"artifacts", json::array()}};
}

// Saves the model exactly as stored (model/state_io.h: every layer's packed blocks, adapters,
// masks in their own dtypes) at `dir`, complete or absent.
void save_state_model(model::LlamaModel& m, const std::string& dir) {
  fs::create_directories(fs::path(dir).parent_path());
  model::save_model_state(m, dir);
}

std::shared_ptr<model::LlamaModel> load_state_model(const std::string& dir) {
  return model::load_model_state(dir);
}

// Runs stages [begin, end) of `r` on `state`, recording into `rd`. With `resume`, stages whose
// state/stage-<i>/done.json matches are restored instead of run.
StagesOutcome run_stages(Env& env, const Recipe& r, RunDir& rd, stages::ModelState& state,
                         size_t begin, size_t end, int threads) {
  StagesOutcome out;
  const size_t total = r.stages.size();
  std::string pending_model_dir;  // weights of a restored stage, loaded only if a later stage runs
  const bool use_cache = env.cache != nullptr && r.options.output.cache;
  const stages::DataOptions data = env.data_for(r);
  for (size_t i = begin; i < end; ++i) {
    const StageEntry& s = r.stages[i];
    json entry = stage_entry_base(i, s);
    if (out.status != "ok") {
      out.entries.push_back(entry);  // skipped after a failure
      continue;
    }
    const std::string input_hash = state.state_hash;
    const std::string key = stage_key(env, r, data, s, input_hash, threads);
    const fs::path stage_dir = fs::path(rd.dir) / "state" / fmt::format("stage-{}", i);
    const fs::path done_path = stage_dir / "done.json";

    // 1. Completed in an earlier (interrupted) attempt of this run directory.
    std::error_code ec;
    if (fs::is_regular_file(done_path, ec)) {
      const json done = read_json_file(done_path.string());
      if (done.value("key", "") == key) {
        entry = done["entry"];
        state.state_hash = done.value("output_hash", input_hash);
        if (!done.value("model_dir", "").empty())
          pending_model_dir = (fs::path(rd.dir) / done.value("model_dir", "")).string();
        rd.events->emit({{"event", "stage_restored"}, {"index", i}, {"name", s.name}});
        env.progress->line(fmt::format("{}stage {}/{} {}: already done (resumed)",
                                       rd.label.empty() ? "" : "[" + rd.label + "] ", i + 1, total,
                                       s.name));
        out.entries.push_back(entry);
        continue;
      }
      fs::remove_all(stage_dir, ec);  // stale: inputs changed since
    }

    // 2. Same inputs and options as a stage run before (any run directory).
    if (use_cache) {
      if (auto hit = env.cache->lookup(key)) {
        std::vector<std::string> artifacts = (*hit)["entry"].value("artifacts", std::vector<std::string>{});
        const bool has_model = hit->value("has_model", false);
        if (env.cache->restore_artifacts(key, rd.dir, artifacts)) {
          entry = (*hit)["entry"];
          entry["index"] = i;
          entry["name"] = s.name;
          entry["status"] = "cached";
          std::string model_dir_rel;
          if (has_model) {
            model_dir_rel = rel_to((stage_dir / "model").string(), rd.dir);
            fs::create_directories(stage_dir);
            fs::remove_all(stage_dir / "model", ec);
            fs::copy(fs::path(env.cache->entry_dir(key)) / "model", stage_dir / "model",
                     fs::copy_options::recursive);
            pending_model_dir = (stage_dir / "model").string();
          }
          state.state_hash = hit->value("output_hash", input_hash);
          fs::create_directories(stage_dir);
          write_json_atomic(done_path.string(), {{"key", key},
                                                 {"input_hash", input_hash},
                                                 {"output_hash", state.state_hash},
                                                 {"model_dir", model_dir_rel},
                                                 {"entry", entry}});
          rd.events->emit({{"event", "stage_cached"}, {"index", i}, {"name", s.name}, {"key", key}});
          env.progress->line(fmt::format("{}stage {}/{} {}: cached",
                                         rd.label.empty() ? "" : "[" + rd.label + "] ", i + 1,
                                         total, s.name));
          out.entries.push_back(entry);
          continue;
        }
      }
    }

    // 3. Run it.
    try {
      if (!pending_model_dir.empty()) {
        auto restored = load_state_model(pending_model_dir);
        state.before_modification();
        state.model = restored;
        pending_model_dir.clear();
      }
      if (s.stage->modifies_model()) state.before_modification();
      s.stage->validate(state);
      stages::StageContext ctx;
      ctx.run_dir = rd.dir;
      ctx.artifacts_dir = (fs::path(rd.dir) / "artifacts").string();
      ctx.index = static_cast<int>(i);
      ctx.total = static_cast<int>(total);
      ctx.stage_name = s.name;
      ctx.seed = static_cast<uint64_t>(r.options.seed);
      ctx.threads = threads;
      ctx.data = &data;
      ctx.interrupt_flag = env.interrupt;
      Progress* progress = env.progress.get();
      ctx.progress = [progress](int64_t d, int64_t t, const std::string& u) { progress->update(d, t, u); };
      ctx.note = [progress](const std::string& n) { progress->note(n); };
      ctx.event = [&rd, i, name = s.name](const json& e) {
        json full = e;
        full["index"] = i;
        full["name"] = name;
        rd.events->emit(std::move(full));
      };
      rd.events->emit({{"event", "stage_start"}, {"index", i}, {"name", s.name}, {"type", s.type}});
      progress->begin_stage(rd.label, static_cast<int>(i), static_cast<int>(total), s.name);
      reset_peak_rss();
      Timer timer;
      stages::StageResult result = s.stage->run(state, ctx);
      const double wall = timer.seconds();
      progress->end_stage();
      entry["status"] = "ok";
      entry["wall_s"] = wall;
      entry["peak_rss_bytes"] = peak_rss_bytes();
      entry["metrics"] = result.metrics;
      entry["artifacts"] = result.artifacts;
      std::string model_dir_rel;
      if (s.stage->modifies_model()) {
        state.state_hash = io::sha256_hex(key + ":output");
        save_state_model(*state.model, (stage_dir / "model").string());
        model_dir_rel = rel_to((stage_dir / "model").string(), rd.dir);
      }
      state.provenance.stages_applied.push_back(fmt::format("{}:{}({})", i, s.name, s.type));
      fs::create_directories(stage_dir);
      // done.json is written last: its presence means the stage's outputs are all in place.
      write_json_atomic(done_path.string(), {{"key", key},
                                             {"input_hash", input_hash},
                                             {"output_hash", state.state_hash},
                                             {"model_dir", model_dir_rel},
                                             {"entry", entry}});
      if (use_cache)
        env.cache->store(key, {{"entry", entry}, {"output_hash", state.state_hash},
                               {"has_model", !model_dir_rel.empty()}},
                         rd.dir, result.artifacts,
                         model_dir_rel.empty() ? "" : (stage_dir / "model").string());
      rd.events->emit({{"event", "stage_end"}, {"index", i}, {"name", s.name}, {"status", "ok"},
                       {"wall_s", wall}, {"metrics", result.metrics}});
      progress->line(fmt::format("{}stage {}/{} {}: ok in {:.2f} s",
                                 rd.label.empty() ? "" : "[" + rd.label + "] ", i + 1, total,
                                 s.name, wall));
    } catch (const stages::Interrupted&) {
      env.progress->end_stage();
      entry["status"] = "failed";
      entry["error"] = "interrupted by the user";
      out.status = "interrupted";
      out.error = "interrupted";
      out.exit_code = 130;
      rd.events->emit({{"event", "interrupted"}, {"index", i}, {"name", s.name}});
    } catch (const std::exception& e) {
      env.progress->end_stage();
      std::string msg = e.what();
      if (const auto* te = dynamic_cast<const c10::Error*>(&e)) msg = te->what_without_backtrace();
      entry["status"] = "failed";
      entry["error"] = msg;
      out.status = "failed";
      out.error = fmt::format("stage {} '{}' ({}) failed: {}", i, s.name, s.type, msg);
      out.exit_code = dynamic_cast<const InputError*>(&e) ? 2 : 1;
      rd.events->emit({{"event", "stage_failed"}, {"index", i}, {"name", s.name}, {"error", msg}});
      env.progress->line("error: " + out.error);
    }
    out.entries.push_back(entry);
  }
  // The caller (a sweep) may continue from this state: make restored weights current.
  if (out.status == "ok" && !pending_model_dir.empty()) {
    auto restored = load_state_model(pending_model_dir);
    state.before_modification();
    state.model = restored;
  }
  return out;
}

// Loads the recipe's input model (or builds the quickstart model) into a fresh state.
stages::ModelState load_input_state(Env& env, const Recipe& r, RunDir& rd) {
  stages::ModelState state;
  const ModelOptions& mo = r.options.model;
  if (mo.path.empty()) {
    QuickstartRequest q;
    q.steps = mo.quickstart_steps;
    q.seed = static_cast<uint64_t>(r.options.seed);
    q.threads = env.threads;
    q.cache_dir = env.cache ? env.cache->root() : "";
    q.run_dir = rd.dir;
    q.interrupt = env.interrupt;
    q.progress = env.progress.get();
    QuickstartModel built = build_or_load_quickstart_model(q);
    state.model = built.model;
    state.tokenizer = built.tokenizer;
    state.provenance.source_path = built.model_dir;
    state.provenance.tokenizer_path = built.tokenizer_path;
    state.state_hash = built.state_hash;
    env.default_eval_path = built.eval_text_path;
    env.hashes.add(built.eval_text_path);
    env.hashes.add(built.tokenizer_path);
    rd.events->emit({{"event", "model_built"}, {"dir", built.model_dir}, {"cached", built.cached}});
  } else {
    model::ModelLoadOptions lo;
    lo.tokenizer_path = mo.tokenizer;
    model::LoadedModel lm = model::load_model(mo.path, lo);
    state.model = lm.model;
    state.tokenizer = lm.tokenizer;
    state.provenance.source_path = mo.path;
    state.provenance.tokenizer_path = mo.tokenizer.empty() ? lm.tokenizer_path : mo.tokenizer;
    std::string h = env.hashes.digest(mo.path);
    if (!mo.tokenizer.empty()) h += ":" + env.hashes.digest(mo.tokenizer);
    state.state_hash = io::sha256_hex("model:" + h);
  }
  state.baseline = state.model;
  return state;
}

json uname_json() {
  struct utsname u {};
  if (::uname(&u) != 0) return "unknown";
  return std::string(u.sysname) + " " + u.release + " " + u.machine;
}

json build_manifest(Env& env, const Recipe& r, const std::string& dir, const std::string& start,
                    const std::string& end, const std::string& status, bool resumed) {
  json m;
  m["llmopt"] = {{"version", env.options.build.version},
                 {"git_commit", env.options.build.git_commit},
                 {"build_type", env.options.build.build_type}};
  m["run"] = {{"name", r.options.name}, {"dir", dir},     {"status", status},
              {"start_time", start},     {"end_time", end.empty() ? json(nullptr) : json(end)},
              {"resumed", resumed}};
  m["command_line"] = env.options.command_line;
  m["recipe"] = {{"path", r.path}, {"composed_files", r.composed_files}};
  m["seed"] = r.options.seed;
  m["threads"] = env.threads;
  m["host"] = {{"cpu_model", cpu_model_name()},
               {"logical_cpus", std::thread::hardware_concurrency()},
               {"hostname", host_name()},
               {"os", uname_json()}};
  json inputs = json::array();
  for (const auto& e : env.hashes.all())
    inputs.push_back({{"path", e.path}, {"sha256", e.sha256}, {"bytes", e.bytes}});
  m["inputs"] = inputs;
  return m;
}

// Cartesian product of the sweep axes, first axis slowest.
std::vector<std::vector<std::pair<std::string, stages::ConfigNode>>> sweep_points(const Recipe& r) {
  std::vector<std::vector<std::pair<std::string, stages::ConfigNode>>> points = {{}};
  for (const auto& axis : r.sweep) {
    std::vector<std::vector<std::pair<std::string, stages::ConfigNode>>> next;
    for (const auto& p : points)
      for (const auto& v : axis.values) {
        auto q = p;
        q.emplace_back(axis.path, v);
        next.push_back(std::move(q));
      }
    points = std::move(next);
  }
  return points;
}

std::string dir_safe(const std::string& s) {
  std::string out;
  for (char c : s) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '=' || c == '.' ||
                    c == '_' || c == '-';
    out += c == ',' ? '-' : (ok ? c : '_');
  }
  return out.substr(0, 120);
}

bool stages_modify(const Recipe& r, size_t begin) {
  for (size_t i = begin; i < r.stages.size(); ++i)
    if (r.stages[i].stage->modifies_model()) return true;
  return false;
}

json run_metrics(const Recipe& r, const std::string& dir, const std::string& status,
                 const std::vector<json>& entries) {
  return json{{"run", {{"name", r.options.name}, {"dir", dir}, {"status", status}}},
              {"stages", entries}};
}

// Runs every sweep point after the shared prefix; returns the "sweep" array.
json run_sweep_points(Env& env, const Recipe& r, RunDir& parent, const stages::ModelState& prefix_state,
                      size_t prefix, StagesOutcome& overall) {
  const auto points = sweep_points(r);
  std::vector<json> results(points.size());
  stages::ConfigNode base = r.tree;
  base.erase("sweep");
  const int parallel = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(
      r.options.sweep_parallel, static_cast<int64_t>(points.size()))));
  const int threads_each = std::max(1, env.threads / parallel);
  std::mutex mu;
  std::atomic<size_t> next{0};

  auto run_point = [&](size_t p) {
    const auto& point = points[p];
    const std::string name = sweep_point_name(point);
    const std::string rel = fmt::format("sweep/{:03}-{}", p, dir_safe(name));
    json overrides = json::object();
    for (const auto& [path, value] : point) overrides[path] = value.to_json();
    json result = {{"name", name}, {"dir", rel}, {"overrides", overrides}, {"status", "failed"},
                   {"stages", json::array()}};
    RunDir rd;
    rd.dir = (fs::path(parent.dir) / rel).string();
    rd.label = name;
    const std::string point_start = iso_time_now();
    try {
      stages::ConfigNode tree = base;
      Diagnostics diag;
      for (const auto& [path, value] : point)
        set_path(tree, path, value, SetMode::Set, value.loc(), diag);
      diag.throw_if_any();
      RecipeLoadOptions lo;
      lo.timestamp = r.timestamp;
      lo.registry = env.options.registry;
      Recipe sub = recipe_from_tree(tree, r.path, lo);
      sub.options.name = r.options.name + "/" + name;
      fs::create_directories(fs::path(rd.dir) / "artifacts");
      fs::create_directories(fs::path(rd.dir) / "state");
      const std::string config_path = (fs::path(rd.dir) / "config.resolved.yaml").string();
      if (!fs::exists(config_path)) io::write_file_atomic(config_path, sub.tree.to_yaml());
      rd.events = std::make_unique<EventLog>((fs::path(rd.dir) / "events.jsonl").string(), false);
      rd.events->emit({{"event", "run_start"}, {"name", sub.options.name}, {"sweep_point", name}});
      set_threads_for_this_thread(threads_each);  // not apply_thread_count: points run concurrently
      stages::ModelState state = prefix_state;
      if (stages_modify(sub, prefix)) state.model = stages::clone_model(*prefix_state.model);
      StagesOutcome o = run_stages(env, sub, rd, state, prefix, sub.stages.size(), threads_each);
      result["status"] = o.status;
      result["stages"] = o.entries;
      write_json_atomic((fs::path(rd.dir) / "metrics.json").string(),
                        run_metrics(sub, rd.dir, o.status, o.entries));
      // Each point is a run directory of its own: manifest and reports too (the parent's report
      // compares the points; this one shows the point's stages and resolved recipe).
      write_json_atomic((fs::path(rd.dir) / "manifest.json").string(),
                        build_manifest(env, sub, rd.dir, point_start, iso_time_now(), o.status, false));
      if (env.options.write_reports && sub.options.output.reports) {
        try {
          env.options.write_reports(rd.dir);
        } catch (const std::exception& e) {
          log::warn("[pipeline] could not write the reports of {}: {}", rd.dir, e.what());
        }
      }
      rd.events->emit({{"event", "run_end"}, {"status", o.status}});
      std::lock_guard<std::mutex> lock(mu);
      if (o.status != "ok" && overall.status == "ok") {
        overall.status = o.status;
        overall.error = name + ": " + o.error;
        overall.exit_code = o.exit_code;
      }
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(mu);
      result["error"] = e.what();
      if (overall.status == "ok") {
        overall.status = "failed";
        overall.error = name + ": " + e.what();
        overall.exit_code = 1;
      }
    }
    parent.events->emit({{"event", "sweep_point_end"}, {"name", name}, {"status", result["status"]}});
    results[p] = result;
  };

  auto worker = [&]() {
    while (true) {
      const size_t p = next.fetch_add(1);
      if (p >= points.size()) return;
      if (env.interrupt && env.interrupt->load()) {
        results[p] = {{"name", sweep_point_name(points[p])}, {"dir", ""}, {"overrides", json::object()},
                      {"status", "skipped"}, {"stages", json::array()}};
        continue;
      }
      run_point(p);
    }
  };
  apply_thread_count(threads_each);  // process-wide (BLAS, torch) once, before any worker starts
  if (parallel == 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    for (int t = 0; t < parallel; ++t) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
  }
  apply_thread_count(env.threads);
  if (env.interrupt && env.interrupt->load() && overall.status == "ok") {
    overall.status = "interrupted";
    overall.exit_code = 130;
  }
  return results;
}

RunOutcome execute(const Recipe& r, const RunOptions& options, const std::string& dir, bool resumed) {
  Env env(options);
  env.interrupt = options.interrupt ? options.interrupt : &install_interrupt_handler();
  env.progress = std::make_unique<Progress>(
      r.options.sweep_parallel > 1 && !r.sweep.empty() && !options.quiet ? Progress::Mode::Lines
                                                                         : Progress::detect(options.quiet));
  if (options.use_cache && r.options.output.cache)
    env.cache = std::make_unique<StageCache>(options.cache_dir.empty() ? default_cache_dir()
                                                                       : options.cache_dir);
  env.threads = options.threads > 0 ? options.threads
                : r.options.threads > 0 ? static_cast<int>(r.options.threads)
                                        : default_threads();
  apply_thread_count(env.threads);

  fs::create_directories(fs::path(dir) / "artifacts");
  fs::create_directories(fs::path(dir) / "state");
  if (resumed) remove_stale_temporaries(dir);
  const std::string config_path = (fs::path(dir) / "config.resolved.yaml").string();
  if (!resumed) io::write_file_atomic(config_path, r.tree.to_yaml());

  RunDir rd;
  rd.dir = dir;
  rd.events = std::make_unique<EventLog>((fs::path(dir) / "events.jsonl").string(), options.json_events);
  const std::string start = iso_time_now();
  Timer wall;
  // Inputs are hashed up front so the manifest lists them even if the run fails early.
  for (const auto& f : r.composed_files) env.hashes.add(f);
  for (const std::string& p : {r.options.model.path, r.options.model.tokenizer,
                               r.options.data.eval.path, r.options.data.calibration.path})
    if (!p.empty()) env.hashes.add(p);
  write_json_atomic((fs::path(dir) / "manifest.json").string(),
                    build_manifest(env, r, dir, start, "", "running", resumed));
  rd.events->emit({{"event", resumed ? "run_resumed" : "run_start"},
                   {"name", r.options.name},
                   {"dir", dir},
                   {"stages", r.stages.size()},
                   {"threads", env.threads}});

  StagesOutcome outcome;
  json sweep;
  double load_s = 0;  // loading (or building) the input model: work, not bookkeeping
  try {
    Timer load_timer;
    stages::ModelState state = load_input_state(env, r, rd);
    load_s = load_timer.seconds();
    // Fail before any work if a stage cannot run on this model.
    for (const auto& s : r.stages) s.stage->validate(state);
    const size_t prefix = r.sweep.empty() ? r.stages.size() : shared_prefix_length(r);
    outcome = run_stages(env, r, rd, state, 0, prefix, env.threads);
    if (!r.sweep.empty() && outcome.status == "ok") {
      sweep = run_sweep_points(env, r, rd, state, prefix, outcome);
    }
  } catch (const stages::Interrupted&) {
    outcome.status = "interrupted";
    outcome.error = "interrupted";
    outcome.exit_code = 130;
  } catch (const InputError& e) {
    outcome.status = "failed";
    outcome.error = e.what();
    outcome.exit_code = 2;
  } catch (const std::exception& e) {
    outcome.status = "failed";
    outcome.error = e.what();
    outcome.exit_code = 1;
  }

  json metrics = run_metrics(r, dir, outcome.status, outcome.entries);
  if (!r.sweep.empty()) metrics["sweep"] = sweep.is_null() ? json::array() : sweep;
  write_json_atomic((fs::path(dir) / "metrics.json").string(), metrics);
  write_json_atomic((fs::path(dir) / "manifest.json").string(),
                    build_manifest(env, r, dir, start, iso_time_now(), outcome.status, resumed));
  if (options.write_reports && r.options.output.reports) {
    try {
      options.write_reports(dir);
    } catch (const std::exception& e) {
      log::warn("[pipeline] could not write the reports of {}: {}", dir, e.what());
    }
  }
  // Bookkeeping = everything but loading the model and running stages: hashing inputs, manifest,
  // metrics, events, checkpoints' done.json, cache stores and reports (bench/RESULTS.md).
  double stage_s = 0;
  for (const auto& e : outcome.entries) stage_s += e.value("wall_s", 0.0);
  for (const auto& p : sweep.is_array() ? sweep : json::array())
    for (const auto& e : p["stages"]) stage_s += e.value("wall_s", 0.0);
  const double total_s = wall.seconds();
  json end_event = {{"event", "run_end"},   {"status", outcome.status}, {"wall_s", total_s},
                    {"load_s", load_s},     {"stages_s", stage_s},
                    {"bookkeeping_s", std::max(0.0, total_s - load_s - stage_s)}};
  if (!outcome.error.empty()) end_event["error"] = outcome.error;
  if (fs::exists(fs::path(dir) / "report.html")) end_event["report"] = (fs::path(dir) / "report.html").string();
  rd.events->emit(end_event);

  RunOutcome result;
  result.run_dir = dir;
  result.status = outcome.status;
  result.exit_code = outcome.exit_code;
  result.error = outcome.error;
  result.metrics = metrics;
  return result;
}

}  // namespace

size_t shared_prefix_length(const Recipe& r) {
  size_t prefix = r.stages.size();
  for (const auto& axis : r.sweep) {
    const std::string& p = axis.path;
    if (p.rfind("pipeline.", 0) == 0) {
      const size_t dot = p.find('.', 9);
      const std::string idx = p.substr(9, dot == std::string::npos ? std::string::npos : dot - 9);
      size_t i = 0;
      try {
        i = std::stoul(idx);
      } catch (...) {
        i = 0;
      }
      prefix = std::min(prefix, i);
    } else {
      return 0;  // seed, data, model...: every stage depends on it
    }
  }
  return prefix;
}

RunOutcome run_recipe(const Recipe& r, const RunOptions& options) {
  std::string dir = options.out_dir.empty() ? r.options.output.dir : options.out_dir;
  LLMOPT_CHECK_INPUT(!dir.empty(), "[pipeline] no run directory: set output.dir or --out");
  dir = fs::absolute(dir).lexically_normal().string();
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    LLMOPT_CHECK_INPUT(fs::is_directory(dir, ec) && fs::is_empty(dir, ec),
                       "[pipeline] run directory {} already exists and is not empty; use "
                       "--resume {} to continue it or --out for a new one",
                       dir, dir);
  }
  return execute(r, options, dir, false);
}

RunOutcome resume_run(const std::string& run_dir, const RunOptions& options) {
  const std::string dir = fs::absolute(run_dir).lexically_normal().string();
  const std::string config = (fs::path(dir) / "config.resolved.yaml").string();
  std::error_code ec;
  LLMOPT_CHECK_INPUT(fs::is_regular_file(config, ec),
                     "[pipeline] --resume {}: not a run directory (no config.resolved.yaml)", dir);
  json manifest;
  const std::string manifest_path = (fs::path(dir) / "manifest.json").string();
  if (fs::exists(manifest_path)) manifest = read_json_file(manifest_path);
  RecipeLoadOptions lo;
  lo.registry = options.registry;
  Recipe r = recipe_from_tree(stages::ConfigNode::load_file(config), config, lo);
  if (manifest.is_object() && manifest.contains("recipe")) {
    r.path = manifest["recipe"].value("path", config);
    r.composed_files.clear();
    for (const auto& f : manifest["recipe"].value("composed_files", json::array()))
      if (fs::exists(f.get<std::string>())) r.composed_files.push_back(f.get<std::string>());
  }
  return execute(r, options, dir, true);
}

}  // namespace llmopt::pipeline
