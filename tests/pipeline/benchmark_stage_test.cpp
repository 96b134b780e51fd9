// The `benchmark` stage (src/stages/benchmark): structure, not timing. A recipe on stories260K with
// a 2 x 2 x 2 grid (threads 1, 2; batch 1, 2; context 16, 32) must give one record per grid point
// in metrics.json and artifacts/benchmark.json with positive speeds, ordered latency percentiles
// (p50 <= p90 <= p99), the right number of latency samples (repetitions x gen_tokens), the KV
// cache of a batch twice that of one sequence, and the first point's figures unsuffixed; bad
// grids exit 2 before anything runs.
//
// The device axis (`devices`, `unavailable_devices`): cpu runs and is recorded per point;
// malformed, repeated or native-off-CPU devices exit 2; `cuda` on a build or machine without
// CUDA exits 2 naming the option and saying CUDA is not available, before any stage runs, or, with
// `unavailable_devices: skip`, is recorded as skipped (metrics, artifact, report). Where this test
// binary's libtorch sees a GPU, the no-CUDA cases do not apply and are skipped.
#include <gtest/gtest.h>
#include <torch/cuda.h>

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

TEST(BenchmarkStage, CpuDeviceRecordedPerPoint) {
  const fs::path dir = make_temp_dir("bench-cpu");
  write_text(dir / "r.yaml", recipe(dir / "run",
                                    "{type: benchmark, devices: [cpu], batch_sizes: [1], context_lengths: [16], "
                                    "gen_tokens: 4, repetitions: 1, warmup: 0}"));
  const CommandResult r = run_llmopt("-q run " + shell_quote((dir / "r.yaml").string()) + " --no-cache");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json art = json::parse(read_text(dir / "run" / "artifacts" / "benchmark.json"));
  ASSERT_EQ(art["grid"].size(), 1u);
  EXPECT_EQ(art["grid"][0]["device"], "cpu");
  EXPECT_EQ(art["grid"][0]["engine"], art["engine"]);
  EXPECT_EQ(art["engines"]["cpu"], art["engine"]);
  EXPECT_TRUE(art["skipped"].empty());
  const std::string html = read_text(dir / "run" / "report.html");
  EXPECT_NE(html.find("<th>Device</th>"), std::string::npos);
  EXPECT_NE(html.find("<tr><td>cpu</td>"), std::string::npos);
}

TEST(BenchmarkStage, BadDevicesExitTwo) {
  const fs::path dir = make_temp_dir("bench-bad-dev");
  const auto expect_exit2 = [&](const std::string& tag, const std::string& stage, const std::string& needle) {
    write_text(dir / (tag + ".yaml"), recipe(dir / tag, stage));
    const CommandResult r = run_llmopt("-q run " + shell_quote((dir / (tag + ".yaml")).string()) + " --no-cache");
    EXPECT_EQ(r.exit_code, 2) << tag << ": " << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << tag << ": " << r.output;
    EXPECT_FALSE(fs::exists(dir / tag / "artifacts" / "benchmark.json")) << tag;
  };
  expect_exit2("gpu", "{type: benchmark, devices: [cpu, gpu]}", "devices: unknown device 'gpu'");
  expect_exit2("colon", "{type: benchmark, devices: ['cuda:']}", "devices: unknown device 'cuda:'");
  expect_exit2("empty", "{type: benchmark, devices: []}", "devices is empty");
  expect_exit2("twice", "{type: benchmark, devices: [cpu, cpu]}", "'cpu' is listed twice");
  expect_exit2("native", "{type: benchmark, devices: [cuda], engine: native}", "the native engine runs on the CPU only");
  expect_exit2("policy", "{type: benchmark, unavailable_devices: ignore}", "unavailable_devices");
}

TEST(BenchmarkStage, CudaWithoutCudaIsAClearErrorBeforeTheRun) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "this libtorch sees a GPU: cuda is available";
  const fs::path dir = make_temp_dir("bench-nocuda");
  write_text(dir / "r.yaml", recipe(dir / "run", "{type: benchmark, devices: [cpu, cuda], gen_tokens: 4}"));
  const CommandResult r = run_llmopt("-q run " + shell_quote((dir / "r.yaml").string()) + " --no-cache");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("[benchmark] devices: 'cuda' is not available: CUDA is not available in this build/machine"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("unavailable_devices: skip"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "run" / "artifacts" / "benchmark.json"));
}

TEST(BenchmarkStage, CudaWithoutCudaSkippedWhenAsked) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "this libtorch sees a GPU: cuda is available";
  const fs::path dir = make_temp_dir("bench-skip");
  write_text(dir / "r.yaml", recipe(dir / "run",
                                    "{type: benchmark, devices: [cpu, cuda], unavailable_devices: skip, "
                                    "context_lengths: [16], gen_tokens: 4, repetitions: 1, warmup: 0}"));
  const CommandResult r = run_llmopt("run " + shell_quote((dir / "r.yaml").string()) + " --no-cache");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("'cuda' skipped"), std::string::npos) << r.output;  // a warning, not silence
  const json art = json::parse(read_text(dir / "run" / "artifacts" / "benchmark.json"));
  ASSERT_EQ(art["grid"].size(), 1u);  // the cpu point only
  EXPECT_EQ(art["grid"][0]["device"], "cpu");
  ASSERT_EQ(art["skipped"].size(), 1u);
  EXPECT_EQ(art["skipped"][0]["device"], "cuda");
  EXPECT_FALSE(art["skipped"][0]["reason"].get<std::string>().empty());
  const json m = json::parse(read_text(dir / "run" / "metrics.json"));
  const json& met = m["stages"][0]["metrics"];
  EXPECT_EQ(met["grid_points"].get<int>(), 1);
  EXPECT_TRUE(met.contains("skipped@cuda"));
  EXPECT_NE(read_text(dir / "run" / "report.html").find("skipped: no CUDA"), std::string::npos);
  EXPECT_NE(read_text(dir / "run" / "report.md").find("| cuda | skipped: no CUDA"), std::string::npos);
}

}  // namespace
}  // namespace llmopt::testing
