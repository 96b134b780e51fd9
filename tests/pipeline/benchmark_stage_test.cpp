// The `benchmark` stage (src/stages/benchmark): structure, not timing. A recipe on stories260K with
// a 2 x 2 x 2 grid (threads 1, 2; batch 1, 2; context 16, 32) must give one record per grid point
// in metrics.json and artifacts/benchmark.json with positive speeds, ordered latency percentiles
// (p50 <= p90 <= p99), the right number of latency samples (repetitions x gen_tokens), the KV
// cache of a batch twice that of one sequence, and the first point's figures unsuffixed; bad
// grids exit 2 before anything runs.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "pipeline_test_util.h"

namespace llmopt::testing {
namespace {

using nlohmann::json;

std::string recipe(const fs::path& out, const std::string& stage) {
  const std::string shared = LLMOPT_SHARED_DIR;
  return "name: bench-test\nmodel:\n  path: " + shared + "/models/stories260K/stories260K.bin\n  tokenizer: " + shared +
         "/models/stories260K/tok512.bin\npipeline:\n  - " + stage + "\noutput:\n  dir: " + out.string() + "\n";
}

TEST(BenchmarkStage, GridRecordsInMetricsAndArtifact) {
  const fs::path dir = make_temp_dir("bench-stage");
  write_text(dir / "r.yaml", recipe(dir / "run",
                                    "{type: benchmark, threads: [1, 2], batch_sizes: [1, 2], context_lengths: [16, 32], "
                                    "gen_tokens: 8, repetitions: 2, warmup: 0}"));
  const CommandResult r = run_llmopt("-q run " + shell_quote((dir / "r.yaml").string()) + " --no-cache");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json m = json::parse(read_text(dir / "run" / "metrics.json"));
  const json& s = m["stages"][0];
  ASSERT_EQ(s["type"], "benchmark");
  const json& met = s["metrics"];
  EXPECT_EQ(met["grid_points"].get<int>(), 8);
  EXPECT_GT(met["model_bytes"].get<double>(), 0);
  const json art = json::parse(read_text(dir / "run" / "artifacts" / "benchmark.json"));
  ASSERT_EQ(art["grid"].size(), 8u);
  for (const auto& p : art["grid"]) {
    const std::string suffix = "@t" + std::to_string(p["threads"].get<int>()) + "_b" +
                               std::to_string(p["batch"].get<int>()) + "_c" + std::to_string(p["context"].get<int>());
    for (const char* k : {"pp_tok_s", "tg_tok_s", "ttft_s", "latency_p50_s", "latency_p90_s", "latency_p99_s"}) {
      EXPECT_GT(p[k].get<double>(), 0) << k << suffix;
      ASSERT_TRUE(met.contains(k + suffix)) << k << suffix;
      EXPECT_EQ(met[k + suffix].get<double>(), p[k].get<double>());
    }
    EXPECT_LE(p["latency_p50_s"].get<double>(), p["latency_p90_s"].get<double>());
    EXPECT_LE(p["latency_p90_s"].get<double>(), p["latency_p99_s"].get<double>());
    EXPECT_EQ(p["latency_samples"].get<int>(), 2 * 8);
    EXPECT_GT(p["peak_rss_bytes"].get<double>(), 0);
  }
  // Grid order: threads, then batch, then context. KV cache of batch 2 = 2 x batch 1.
  EXPECT_EQ(art["grid"][0]["threads"], 1);
  EXPECT_EQ(art["grid"][7]["threads"], 2);
  EXPECT_EQ(art["grid"][2]["batch"].get<int>(), 2);
  EXPECT_EQ(art["grid"][2]["kv_cache_bytes"].get<double>(), 2 * art["grid"][0]["kv_cache_bytes"].get<double>());
  EXPECT_EQ(met["pp_tok_s"].get<double>(), art["grid"][0]["pp_tok_s"].get<double>());
  // The report renders the stage (its metrics table).
  EXPECT_NE(read_text(dir / "run" / "report.html").find("grid_points"), std::string::npos);
}

TEST(BenchmarkStage, BadGridExitsTwo) {
  const fs::path dir = make_temp_dir("bench-bad");
  write_text(dir / "a.yaml", recipe(dir / "a", "{type: benchmark, batch_sizes: []}"));
  CommandResult r = run_llmopt("-q run " + shell_quote((dir / "a.yaml").string()) + " --no-cache");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("batch_sizes"), std::string::npos) << r.output;
  // stories260K's context is 512 tokens.
  write_text(dir / "b.yaml", recipe(dir / "b", "{type: benchmark, context_lengths: [4096]}"));
  r = run_llmopt("-q run " + shell_quote((dir / "b.yaml").string()) + " --no-cache");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("context_lengths: 4096"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace llmopt::testing
