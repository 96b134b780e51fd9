// End-to-end runs of the llmopt binary on a tiny model: run directory contents, determinism,
// failure handling, kill -9 + --resume, cache reuse, and a 4-point sweep.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <fcntl.h>

#include <chrono>
#include <map>
#include <set>
#include <sstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "pipeline_test_util.h"
#include "tiny_model.h"

extern char** environ;

namespace llmopt::testing {
namespace {

using nlohmann::json;

json read_json(const fs::path& p) { return json::parse(read_text(p)); }

// Every regular file under dir/sub, relative path -> bytes.
std::map<std::string, std::string> tree_bytes(const fs::path& dir) {
  std::map<std::string, std::string> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[fs::relative(e.path(), dir).string()] = read_text(e.path());
  return out;
}

// Metrics with the timing-dependent ones removed.
json stable_metrics(json stages) {
  static const std::set<std::string> timing = {"pp_tok_s", "pp_tok_s_sd", "tg_tok_s", "tg_tok_s_sd",
                                              "peak_rss_bytes"};
  for (auto& s : stages) {
    s.erase("wall_s");
    s.erase("peak_rss_bytes");
    for (const auto& k : timing) s["metrics"].erase(k);
  }
  return stages;
}

const char* kPipeline =
    "  - {type: evaluate, name: baseline, metrics: [perplexity, kld, memory]}\n"
    "  - {type: export, formats: [gguf, hf], dtype: f16}\n"
    "  - {type: export, name: export-f32, formats: [gguf, llama2c], dtype: f32, basename: model-f32}\n";

class RunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = make_temp_dir("run");
    tiny_ = make_tiny_model(dir_, 30000);
    ::setenv("LLMOPT_CACHE_DIR", (dir_ / "cache").c_str(), 1);
  }
  fs::path dir_;
  TinyModel tiny_;
};

TEST_F(RunTest, RunDirectoryHasEveryRecordAndDeterministicArtifacts) {
  write_text(dir_ / "r.yaml", tiny_recipe(tiny_, kPipeline));
  const CommandResult a = run_llmopt("run " + shell_quote((dir_ / "r.yaml").string()) + " --no-cache --out " +
                                     shell_quote((dir_ / "a").string()));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  const CommandResult b = run_llmopt("run " + shell_quote((dir_ / "r.yaml").string()) + " --no-cache --out " +
                                     shell_quote((dir_ / "b").string()));
  ASSERT_EQ(b.exit_code, 0) << b.output;
  for (const char* f : {"config.resolved.yaml", "manifest.json", "metrics.json", "events.jsonl"})
    EXPECT_TRUE(fs::exists(dir_ / "a" / f)) << f;
  const json m = read_json(dir_ / "a" / "metrics.json");
  EXPECT_EQ(m["run"]["status"], "ok");
  ASSERT_EQ(m["stages"].size(), 3u);
  EXPECT_EQ(m["stages"][0]["name"], "baseline");
  EXPECT_GT(m["stages"][0]["metrics"]["perplexity"].get<double>(), 1.0);
  EXPECT_EQ(m["stages"][0]["metrics"]["kld_mean"].get<double>(), 0.0);  // against itself
  EXPECT_FALSE(m["stages"][1]["artifacts"].empty());
  for (const auto& a_rel : m["stages"][1]["artifacts"]) EXPECT_TRUE(fs::exists(dir_ / "a" / a_rel.get<std::string>()));
  const json manifest = read_json(dir_ / "a" / "manifest.json");
  EXPECT_EQ(manifest["run"]["status"], "ok");
  EXPECT_EQ(manifest["seed"], 3);
  EXPECT_EQ(manifest["threads"], 2);
  bool has_model_input = false;
  for (const auto& in : manifest["inputs"])
    if (in["path"].get<std::string>().find("model.safetensors") != std::string::npos &&
        in["sha256"].get<std::string>().size() == 64)
      has_model_input = true;
  EXPECT_TRUE(has_model_input) << manifest.dump(2);
  // Same recipe, seed and threads: byte-identical artifacts, identical metrics except timings.
  const auto arts_a = tree_bytes(dir_ / "a" / "artifacts");
  EXPECT_EQ(arts_a.size(), tree_bytes(dir_ / "b" / "artifacts").size());
  EXPECT_TRUE(arts_a == tree_bytes(dir_ / "b" / "artifacts"));
  EXPECT_EQ(stable_metrics(m["stages"]), stable_metrics(read_json(dir_ / "b" / "metrics.json")["stages"]));
  // Every events.jsonl line is a whole JSON object.
  std::istringstream ev(read_text(dir_ / "a" / "events.jsonl"));
  std::string line;
  int n = 0;
  while (std::getline(ev, line)) {
    EXPECT_NO_THROW((void)json::parse(line)) << line;
    ++n;
  }
  EXPECT_GE(n, 5);
}

TEST_F(RunTest, CacheSkipsAnUnchangedPrefix) {
  write_text(dir_ / "r.yaml", tiny_recipe(tiny_, kPipeline));
  const CommandResult a = run_llmopt("run " + shell_quote((dir_ / "r.yaml").string()) + " --out " +
                                     shell_quote((dir_ / "first").string()));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  // Changing the last stage keeps the first two cached.
  const CommandResult b = run_llmopt("run " + shell_quote((dir_ / "r.yaml").string()) +
                                     " pipeline.2.basename=renamed --out " + shell_quote((dir_ / "second").string()));
  ASSERT_EQ(b.exit_code, 0) << b.output;
  const json m = read_json(dir_ / "second" / "metrics.json");
  EXPECT_EQ(m["stages"][0]["status"], "cached");
  EXPECT_EQ(m["stages"][1]["status"], "cached");
  EXPECT_EQ(m["stages"][2]["status"], "ok");
  EXPECT_EQ(m["stages"][0]["metrics"]["perplexity"],
            read_json(dir_ / "first" / "metrics.json")["stages"][0]["metrics"]["perplexity"]);
  EXPECT_TRUE(tree_bytes(dir_ / "first" / "artifacts")["model.gguf"] ==
              tree_bytes(dir_ / "second" / "artifacts")["model.gguf"]);
}

TEST_F(RunTest, FailingStageKeepsEarlierOutputsAndExitsOne) {
  // The eval text is too short for ctx 4096 under the llamacpp protocol: the second evaluate fails.
  write_text(dir_ / "r.yaml",
             tiny_recipe(tiny_, "  - {type: export, formats: [gguf]}\n  - {type: evaluate, ctx: 100000}\n"
                                "  - {type: export, name: never, formats: [hf]}\n"));
  const CommandResult r = run_llmopt("run " + shell_quote((dir_ / "r.yaml").string()) + " --no-cache --out " +
                                     shell_quote((dir_ / "run").string()));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("evaluate"), std::string::npos) << r.output;
  const json m = read_json(dir_ / "run" / "metrics.json");
  EXPECT_EQ(m["run"]["status"], "failed");
  EXPECT_EQ(m["stages"][0]["status"], "ok");
  EXPECT_EQ(m["stages"][1]["status"], "failed");
  EXPECT_FALSE(m["stages"][1]["error"].get<std::string>().empty());
  EXPECT_EQ(m["stages"][2]["status"], "skipped");
  EXPECT_TRUE(fs::exists(dir_ / "run" / "artifacts" / "model.gguf"));
  EXPECT_NE(read_text(dir_ / "run" / "events.jsonl").find("stage_failed"), std::string::npos);
}

pid_t spawn_llmopt(const std::vector<std::string>& args, const fs::path& log) {
  std::vector<std::string> argv_s = {llmopt_bin()};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = 0;
  EXPECT_EQ(posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

// Waits until `pred` holds or the child exits; returns false if it exited first.
template <typename Pred>
bool wait_for(pid_t pid, Pred pred, double timeout_s = 120) {
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < timeout_s) {
    if (pred()) return true;
    int status;
    if (::waitpid(pid, &status, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

TEST_F(RunTest, KillNineThenResumeGivesIdenticalArtifacts) {
  // A slow evaluation (many chunks) between exports, so the kill lands inside a stage.
  write_text(tiny_.eval_text, train::generate_stories(99, 400000));
  const std::string pipeline =
      "  - {type: export, formats: [gguf, hf], dtype: f16}\n"
      "  - {type: evaluate, name: slow, metrics: [perplexity], ctx: 32}\n"
      "  - {type: export, name: late, formats: [llama2c, gguf], dtype: f32, basename: late}\n";
  write_text(dir_ / "r.yaml", tiny_recipe(tiny_, pipeline));
  const CommandResult ref = run_llmopt("run " + shell_quote((dir_ / "r.yaml").string()) +
                                       " --no-cache --out " + shell_quote((dir_ / "ref").string()));
  ASSERT_EQ(ref.exit_code, 0) << ref.output;

  const fs::path run = dir_ / "killed";
  const pid_t pid = spawn_llmopt({"run", (dir_ / "r.yaml").string(), "--no-cache", "--out", run.string()},
                                 dir_ / "killed.log");
  const bool in_slow_stage = wait_for(pid, [&] {
    return read_text(run / "events.jsonl").find("\"stage_start\",\"index\":1") != std::string::npos ||
           read_text(run / "events.jsonl").find("\"index\":1,\"name\":\"slow\"") != std::string::npos;
  });
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(in_slow_stage) << read_text(dir_ / "killed.log");
  EXPECT_FALSE(fs::exists(run / "metrics.json")) << "a killed run must not look finished";
  EXPECT_FALSE(fs::exists(run / "state" / "stage-1" / "done.json"));
  // Whatever is there is either a temporary (dot-name with .tmp) or identical to the reference.
  const auto ref_arts = tree_bytes(dir_ / "ref" / "artifacts");
  for (const auto& [rel, bytes] : tree_bytes(run / "artifacts")) {
    const std::string name = fs::path(rel).filename().string();
    const bool temporary = rel.find("/.") != std::string::npos || name[0] == '.' || rel[0] == '.';
    if (temporary) continue;
    ASSERT_TRUE(ref_arts.count(rel)) << rel;
    EXPECT_TRUE(ref_arts.at(rel) == bytes) << rel << " looks complete but differs";
  }
  std::istringstream ev(read_text(run / "events.jsonl"));
  for (std::string line; std::getline(ev, line);) EXPECT_NO_THROW((void)json::parse(line)) << line;

  const CommandResult resumed = run_llmopt("run --no-cache --resume " + shell_quote(run.string()));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  const json m = read_json(run / "metrics.json");
  EXPECT_EQ(m["run"]["status"], "ok");
  EXPECT_EQ(m["stages"][0]["status"], "ok");  // restored from its done.json
  EXPECT_TRUE(ref_arts == tree_bytes(run / "artifacts"));
  EXPECT_EQ(stable_metrics(m["stages"]), stable_metrics(read_json(dir_ / "ref" / "metrics.json")["stages"]));
}

TEST_F(RunTest, InterruptStopsCleanlyAndResumes) {
  write_text(tiny_.eval_text, train::generate_stories(99, 400000));
  write_text(dir_ / "r.yaml", tiny_recipe(tiny_, "  - {type: export, formats: [gguf]}\n"
                                                 "  - {type: evaluate, name: slow, metrics: [perplexity], ctx: 32}\n"));
  const fs::path run = dir_ / "int";
  const pid_t pid = spawn_llmopt({"run", (dir_ / "r.yaml").string(), "--no-cache", "--out", run.string()},
                                 dir_ / "int.log");
  wait_for(pid, [&] { return read_text(run / "events.jsonl").find("\"name\":\"slow\"") != std::string::npos; });
  ::kill(pid, SIGINT);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << read_text(dir_ / "int.log");
  ASSERT_EQ(WEXITSTATUS(status), 130) << read_text(dir_ / "int.log");
  const json m = read_json(run / "metrics.json");
  EXPECT_EQ(m["run"]["status"], "interrupted");
  const CommandResult resumed = run_llmopt("run --no-cache --resume " + shell_quote(run.string()));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_EQ(read_json(run / "metrics.json")["run"]["status"], "ok");
}

TEST_F(RunTest, SweepOfFourPointsSharesTheBaseline) {
  const std::string pipeline =
      "  - {type: evaluate, name: baseline, metrics: [perplexity, kld, memory]}\n"
      "  - {type: export, formats: [gguf]}\n"
      "  - {type: evaluate, name: evaluate, metrics: [perplexity, kld, memory]}\n";
  write_text(dir_ / "r.yaml", tiny_recipe(tiny_, pipeline,
                                          "sweep:\n  pipeline.1.dtype: [f32, f16]\n  pipeline.2.ctx: [32, 64]\n"
                                          "sweep_parallel: 2\n"));
  const CommandResult r = run_llmopt("run " + shell_quote((dir_ / "r.yaml").string()) + " --no-cache --out " +
                                     shell_quote((dir_ / "sweep").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json m = read_json(dir_ / "sweep" / "metrics.json");
  EXPECT_EQ(m["run"]["status"], "ok");
  ASSERT_EQ(m["stages"].size(), 1u);  // the shared baseline, evaluated once
  EXPECT_EQ(m["stages"][0]["name"], "baseline");
  ASSERT_EQ(m["sweep"].size(), 4u);
  std::set<std::string> names;
  for (const auto& p : m["sweep"]) {
    EXPECT_EQ(p["status"], "ok") << p.dump();
    names.insert(p["name"].get<std::string>());
    EXPECT_TRUE(fs::exists(dir_ / "sweep" / p["dir"].get<std::string>() / "artifacts" / "model.gguf"));
    ASSERT_EQ(p["stages"].size(), 2u);
    EXPECT_GT(p["stages"][1]["metrics"]["perplexity"].get<double>(), 1.0);
    // Every point is a run directory of its own, with its manifest and reports.
    const fs::path pd = dir_ / "sweep" / p["dir"].get<std::string>();
    EXPECT_EQ(read_json(pd / "manifest.json")["run"]["status"], "ok");
    EXPECT_TRUE(fs::exists(pd / "report.html")) << pd;
    EXPECT_TRUE(fs::exists(pd / "report.md")) << pd;
  }
  EXPECT_TRUE(names.count("dtype=f16,ctx=64"));
  ASSERT_TRUE(fs::exists(dir_ / "sweep" / "report.html"));
  const std::string html = read_text(dir_ / "sweep" / "report.html");
  EXPECT_NE(html.find("<svg"), std::string::npos);
  for (const auto& n : names) EXPECT_NE(html.find(n), std::string::npos) << n;
}

// The shipped sweep template (configs/templates/sweep.yaml) runs, and what it sweeps changes the
// metrics (it once swept the export dtype, which cannot change any).
TEST_F(RunTest, SweepTemplateRunsAndItsPointsDiffer) {
  const std::string args = "run " + shell_quote((fs::path(LLMOPT_SOURCE_DIR) / "configs" / "templates" /
                                                 "sweep.yaml").string()) +
                           " --no-cache --out " + shell_quote((dir_ / "tpl").string()) +
                           " model.path=" + shell_quote(tiny_.model_dir.string()) +
                           " model.tokenizer=" + shell_quote(tiny_.tokenizer.string()) +
                           " data.eval.path=" + shell_quote(tiny_.eval_text.string()) + " threads=2";
  const CommandResult r = run_llmopt(args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json m = read_json(dir_ / "tpl" / "metrics.json");
  ASSERT_GE(m["sweep"].size(), 2u);
  std::set<double> perplexities;
  for (const auto& p : m["sweep"]) {
    ASSERT_EQ(p["status"], "ok") << p.dump();
    perplexities.insert(p["stages"].back()["metrics"]["perplexity"].get<double>());
  }
  EXPECT_EQ(perplexities.size(), m["sweep"].size()) << m["sweep"].dump();
}

TEST(Cli, StagesInitAndGeneratedDocsAreCurrent) {
  const CommandResult s = run_llmopt("stages");
  ASSERT_EQ(s.exit_code, 0) << s.output;
  EXPECT_NE(s.output.find("evaluate"), std::string::npos);
  EXPECT_NE(s.output.find("bench_repetitions"), std::string::npos);
  // docs/recipes.md is generated from the declarations and committed: it must match.
  const CommandResult md = run_llmopt("stages --markdown");
  ASSERT_EQ(md.exit_code, 0);
  EXPECT_EQ(md.output, read_text(fs::path(LLMOPT_SOURCE_DIR) / "docs" / "recipes.md"))
      << "regenerate with: llmopt stages --markdown > docs/recipes.md";
  const fs::path dir = make_temp_dir("init");
  const CommandResult init = run_llmopt("init --template sweep " + shell_quote((dir / "s.yaml").string()),
                                        LLMOPT_SOURCE_DIR);
  ASSERT_EQ(init.exit_code, 0) << init.output;
  EXPECT_NE(read_text(dir / "s.yaml").find("sweep:"), std::string::npos);
  const CommandResult again = run_llmopt("init " + shell_quote((dir / "s.yaml").string()), LLMOPT_SOURCE_DIR);
  EXPECT_EQ(again.exit_code, 2) << again.output;  // refuses to overwrite
  const CommandResult bad = run_llmopt("init --template nope " + shell_quote((dir / "x.yaml").string()),
                                       LLMOPT_SOURCE_DIR);
  EXPECT_EQ(bad.exit_code, 2);
}

}  // namespace
}  // namespace llmopt::testing
