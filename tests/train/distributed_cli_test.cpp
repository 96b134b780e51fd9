// `--nproc` end to end through the llmopt binary (LLMOPT_BIN): `llmopt finetune --nproc 2` and
// `llmopt run --nproc 2` (a recipe with a finetune stage) give the loss curve of `llmopt finetune`
// in one process at the same global batch, within distributed_test.cpp's float32 bound; only
// rank 0's outputs appear; --nproc 0 and a bad job environment are exit 2 naming the option or
// variable.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdlib>

#include "../pipeline/pipeline_test_util.h"
#include "../pipeline/tiny_model.h"

namespace llmopt::testing {
namespace {

// distributed_test.cpp's float32 loss bound K·lr·κ·n·u·S for K = 4 steps at lr 1e-2.
constexpr double kTolLoss = 4 * 1e-2 * 100 * 1e4 * 6.0e-8 * 10;  // 2.4e-3

std::vector<double> losses(const fs::path& events) {
  std::vector<double> out;
  std::stringstream ev(read_text(events));
  for (std::string line; std::getline(ev, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.value("event", "") == "train_step") out.push_back(j["loss"].get<double>());
  }
  return out;
}

TEST(DistributedCli, TwoRanksFollowOneProcessInFinetuneAndRun) {
  const fs::path dir = make_temp_dir("dist-cli");
  const TinyModel t = make_tiny_model(dir, 20000);
  const std::string common = "finetune " + shell_quote(t.model_dir.string()) + " --tokenizer " +
                             shell_quote(t.tokenizer.string()) + " --data " + shell_quote(t.eval_text.string()) +
                             " --method lora --r 4 --alpha 8 --steps 4 --batch-size 4 --grad-accum 2 --seq-len 32"
                             " --lr 0.01 --warmup 0 -q";
  const auto one = run_llmopt(common + " --out " + shell_quote((dir / "one").string()));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  // Once more into the same directory, not resumed: a fresh run, so its events replace the first
  // run's instead of following them (4 train_step lines, not 8).
  const auto again = run_llmopt(common + " --out " + shell_quote((dir / "one").string()));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  const auto two = run_llmopt(common + " --nproc 2 --out " + shell_quote((dir / "two").string()));
  ASSERT_EQ(two.exit_code, 0) << two.output;
  EXPECT_TRUE(fs::exists(dir / "two" / "adapter_model.safetensors"));
  const auto l1 = losses(dir / "one" / "train_events.jsonl"), l2 = losses(dir / "two" / "train_events.jsonl");
  ASSERT_EQ(l1.size(), 4u);
  ASSERT_EQ(l2.size(), 4u) << "rank 0 alone writes the events";
  for (size_t i = 0; i < l1.size(); ++i) EXPECT_NEAR(l2[i], l1[i], kTolLoss) << "step " << i + 1;

  // The same training as a recipe stage, 2 ranks.
  const std::string pipe =
      "  - type: finetune\n"
      "    lora: {r: 4, alpha: 8, target_modules: [all-linear]}\n"
      "    train: {path: " + t.eval_text.string() + ", seq_len: 32}\n"
      "    max_steps: 4\n    batch_size: 4\n    grad_accum: 2\n    lr: 0.01\n    warmup: 0\n";
  write_text(dir / "r.yaml", tiny_recipe(t, pipe));
  const auto run = run_llmopt("run " + shell_quote((dir / "r.yaml").string()) + " --nproc 2 -q --out " +
                              shell_quote((dir / "run").string()));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("run directory: " + (dir / "run").string()), std::string::npos) << run.output;
  const auto l3 = losses(dir / "run" / "events.jsonl");
  ASSERT_EQ(l3.size(), 4u) << "rank 0 alone writes the run's events";
  for (size_t i = 0; i < l1.size(); ++i) EXPECT_NEAR(l3[i], l1[i], kTolLoss) << "step " << i + 1;
  EXPECT_TRUE(fs::exists(dir / "run" / "artifacts" / "adapter" / "adapter_model.safetensors"));
  fs::remove_all(dir);
}

TEST(DistributedCli, BadProcessCountOrEnvironmentIsExit2NamingIt) {
  const fs::path dir = make_temp_dir("dist-cli-bad");
  const TinyModel t = make_tiny_model(dir, 4000);
  const std::string common = "finetune " + shell_quote(t.model_dir.string()) + " --tokenizer " +
                             shell_quote(t.tokenizer.string()) + " --data " + shell_quote(t.eval_text.string()) +
                             " --steps 1 --batch-size 4 --seq-len 16 -q --out " + shell_quote((dir / "o").string());
  auto r = run_llmopt(common + " --nproc 0");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--nproc"), std::string::npos) << r.output;
  r = run_llmopt(common + " --nproc 3");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--batch-size 4"), std::string::npos) << r.output;
  r = run_llmopt("run nothing.yaml --nproc 0");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--nproc"), std::string::npos) << r.output;
  // WORLD_SIZE without RANK, as a misconfigured launcher would leave it.
  const std::string env = "env -u RANK WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29999 ";
  const std::string cmd = env + shell_quote(llmopt_bin()) + " " + common + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int status = ::pclose(p);
  EXPECT_EQ(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 2) << out;
  EXPECT_NE(out.find("RANK"), std::string::npos) << out;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmopt::testing
