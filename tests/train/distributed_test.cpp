// Data-parallel training over c10d Gloo on loopback. The test binary starts itself twice as ranks
// (dist::launch_local, the launcher behind `--nproc`, running only DistributedWorker.Rank with
// LLMOPT_DIST_TEST_* in the environment) and compares what the ranks trained with the same
// training run in this process alone, at the same global batch:
//   - float64, full fine-tuning: loss curve and weights of 2 ranks = 1 process within the
//     reassociation bound derived below;
//   - float32, LoRA: the same within the float32 bound;
//   - both ranks end with bit-identical weights (same averaged gradients, same optimizer);
//   - LoRA with dropout, checkpointed at step 3 by rank 0 only, resumed by 2 ranks of which only
//     rank 0 finds the checkpoint: bytes of the uninterrupted 2-rank run;
//   - a bad job environment (WORLD_SIZE without RANK, RANK out of range, no MASTER_ADDR) and
//     --nproc 0 are InputErrors (exit 2) naming the variable or option.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <functional>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

#include "core/error.h"
#include "model/lora_linear.h"
#include "model/synth.h"
#include "train/distributed.h"
#include "train/trainer.h"

namespace llmopt::train {
namespace {
namespace fs = std::filesystem;

constexpr int64_t kSteps = 6, kBatch = 4, kAccum = 2, kSeq = 16, kVocab = 64;

ModelConfig tiny_config() {
  ModelConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.vocab_size = kVocab;
  c.max_position_embeddings = 64;
  return c;
}

struct RunOut {
  std::vector<double> losses;
  std::vector<double> grad_norms;  // global gradient norm before clipping, per step of this call
  std::vector<torch::Tensor> weights;  // trainable parameters after the run
};

// mode: f64 (full fine-tuning in float64), f32 (LoRA r=4), dropout (LoRA r=4, dropout 0.1).
RunOut train_tiny(const std::string& mode, const std::string& ckpt_dir = "", const std::string& resume = "") {
  auto m = model::synth_model(tiny_config(), 7);
  if (mode == "f64") {
    m->to(torch::kFloat64);
    for (auto& p : m->parameters()) p.set_requires_grad(true);
  } else {
    model::LoraConfig lc;
    lc.r = 4;
    lc.alpha = 8;
    lc.dropout = mode == "dropout" ? 0.1 : 0.0;
    model::apply_lora(*m, {"all-linear"}, lc, 11);
    // A non-zero B, so that every adapter parameter gets a gradient from the first step.
    torch::NoGradGuard g;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(13);
    for (auto& p : m->named_parameters())
      if (p.key().find("lora_B") != std::string::npos) p.value().copy_(torch::randn(p.value().sizes(), gen) * 0.05);
  }
  TrainerOptions o;
  o.steps = kSteps;
  o.batch = kBatch;
  o.grad_accum = kAccum;
  o.seq_len = kSeq;
  o.lr = 1e-2;
  o.min_lr = 1e-3;
  o.warmup = 2;
  o.weight_decay = 0.1;
  o.grad_clip = 1.0;
  o.seed = 5;
  o.log_every = 0;
  o.checkpoint_dir = ckpt_dir;
  o.checkpoint_every = ckpt_dir.empty() ? 0 : 3;
  o.keep_checkpoints = 2;
  o.resume_from = resume;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(123);
  const torch::Tensor rows = torch::randint(0, kVocab, {kSteps * kAccum * kBatch, kSeq + 1}, gen, torch::kInt64);
  Trainer t(*m, next_token_loss(*m), o);
  RunOut out;
  t.set_step_callback([&out](const TrainProgress& p) { out.grad_norms.push_back(p.grad_norm); });
  const TrainResult r =
      t.train([&](int64_t index, torch::Generator&) { return rows.slice(0, index * kBatch, (index + 1) * kBatch); });
  out.losses = r.loss_curve;
  for (auto& p : m->parameters())
    if (p.requires_grad()) out.weights.push_back(p.detach().clone());
  return out;
}

void save_out(const RunOut& r, const std::string& path) {
  std::vector<torch::Tensor> all = r.weights;
  all.push_back(torch::tensor(r.grad_norms, torch::kFloat64));
  all.push_back(torch::tensor(r.losses, torch::kFloat64));
  torch::save(all, path);
}

RunOut load_out(const std::string& path) {
  std::vector<torch::Tensor> all;
  torch::load(all, path);
  RunOut r;
  const torch::Tensor l = all.back();
  all.pop_back();
  r.losses.assign(l.data_ptr<double>(), l.data_ptr<double>() + l.numel());
  const torch::Tensor n = all.back();
  all.pop_back();
  r.grad_norms.assign(n.data_ptr<double>(), n.data_ptr<double>() + n.numel());
  r.weights = all;
  return r;
}

// A rank of a job started by Distributed.* (skipped when run on its own).
TEST(DistributedWorker, Rank) {
  const char* mode = std::getenv("LLMOPT_DIST_TEST_MODE");
  const char* dir = std::getenv("LLMOPT_DIST_TEST_DIR");
  if (mode == nullptr || dir == nullptr) GTEST_SKIP() << "runs only as a rank of the Distributed tests";
  torch::set_num_threads(1);
  dist::ProcessGroup* g = dist::init_from_environment();
  ASSERT_NE(g, nullptr);
  const int rank = g->rank();
  const char* resume = std::getenv("LLMOPT_DIST_TEST_RESUME");
  // Every rank gets its own checkpoint directory, as ranks > 0 of `llmopt run --nproc` write into a
  // scratch directory: only rank 0's may receive files, and only rank 0 is told to resume.
  const std::string ckpt = std::getenv("LLMOPT_DIST_TEST_CKPT") ? fmt::format("{}/ckpt-rank{}", dir, rank) : "";
  const RunOut r = train_tiny(mode, ckpt, rank == 0 && resume ? resume : "");
  save_out(r, fmt::format("{}/rank{}.pt", dir, rank));
}

fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("llmopt_dist_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Runs DistributedWorker.Rank as 2 ranks; true when both exit 0.
int run_ranks(const std::string& mode, const fs::path& dir, bool checkpoints, const std::string& resume = "") {
  ::setenv("LLMOPT_DIST_TEST_MODE", mode.c_str(), 1);
  ::setenv("LLMOPT_DIST_TEST_DIR", dir.c_str(), 1);
  if (checkpoints) ::setenv("LLMOPT_DIST_TEST_CKPT", "1", 1);
  if (!resume.empty()) ::setenv("LLMOPT_DIST_TEST_RESUME", resume.c_str(), 1);
  dist::LaunchOptions lo;
  lo.nproc = 2;
  lo.argv = {"test_train", "--gtest_filter=DistributedWorker.Rank"};
  const int rc = dist::launch_local(lo);
  for (const char* v : {"LLMOPT_DIST_TEST_MODE", "LLMOPT_DIST_TEST_DIR", "LLMOPT_DIST_TEST_CKPT", "LLMOPT_DIST_TEST_RESUME"})
    ::unsetenv(v);
  return rc;
}

double max_abs_diff(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    d = std::max(d, (a[i].to(torch::kFloat64) - b[i].to(torch::kFloat64)).abs().max().item<double>());
  return d;
}

bool bytes_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!torch::equal(a[i], b[i])) return false;
  return true;
}

// Tolerance. One process sums each weight gradient over all B·T = 64 predicted positions of a
// micro-batch; two ranks sum 32 each and the all-reduce adds the two halves (then ×0.5, exact).
// Both are valid summation orders of the same terms, so they differ by reassociation only, at most
// γ_n·Σ|terms| with γ_n ≈ n·u (Higham, Accuracy and Stability, §4.2). n is the longest chain of
// roundings whose order changes: the 64 positions times the ≈160 multiply-adds feeding each term
// (hidden 32 + ffn 64 + vocab 64), n ≈ 1e4. AdamW turns a relative gradient error δ into an update
// error ≤ lr·δ per component, except where a gradient component is near zero and m/√v magnifies
// it; we allow κ = 100 for that. Over K = 6 steps at lr ≤ 1e-2 the weights then differ by at most
//   tol_w(u) = K·lr·κ·n·u,
// and the loss and the gradient norm (relative), which sum the effects of weights of size ≤ 1 over
// many terms, by S = 10 times that. float64 (u = 1.1e-16): tol_w = 6.6e-11; float32 (u = 6e-8):
// 3.6e-4. These are worst-case bounds; typical reassociation errors grow like √n, far below.
constexpr double kU64 = 1.1e-16, kU32 = 6.0e-8;
constexpr double kChain = 1e4, kAdamFactor = 100, kLr = 1e-2, kLossScale = 10;
constexpr double tol_weights(double u) { return kSteps * kLr * kAdamFactor * kChain * u; }
constexpr double kTolF64 = tol_weights(kU64) * kLossScale;         // loss, grad norm (relative): 6.6e-10
constexpr double kTolF64Weights = tol_weights(kU64);                // 6.6e-11
constexpr double kTolF32Loss = tol_weights(kU32) * kLossScale;     // 3.6e-3
constexpr double kTolF32Weights = tol_weights(kU32);                // 3.6e-4

TEST(Distributed, TwoGlooRanksFollowOneProcessInFloat64) {
  const auto dir = temp_dir("f64");
  ASSERT_EQ(run_ranks("f64", dir, false), 0);
  const RunOut r0 = load_out((dir / "rank0.pt").string()), r1 = load_out((dir / "rank1.pt").string());
  EXPECT_TRUE(bytes_equal(r0.weights, r1.weights)) << "ranks ended with different weights";
  const RunOut one = train_tiny("f64");
  ASSERT_EQ(r0.losses.size(), one.losses.size());
  // AdamW's update does not change when every gradient is scaled by the same factor, so a wrong
  // average (a sum, say) would not show in the weights: the gradient norms are compared too.
  ASSERT_EQ(r0.grad_norms.size(), one.grad_norms.size());
  double loss_diff = 0, norm_diff = 0;
  for (size_t i = 0; i < one.losses.size(); ++i) {
    EXPECT_NEAR(r0.losses[i], one.losses[i], kTolF64) << "step " << i + 1;
    EXPECT_NEAR(r0.grad_norms[i], one.grad_norms[i], kTolF64 * one.grad_norms[i]) << "step " << i + 1;
    loss_diff = std::max(loss_diff, std::abs(r0.losses[i] - one.losses[i]));
    norm_diff = std::max(norm_diff, std::abs(r0.grad_norms[i] - one.grad_norms[i]) / one.grad_norms[i]);
  }
  const double wdiff = max_abs_diff(r0.weights, one.weights);
  EXPECT_LE(wdiff, kTolF64Weights);
  std::printf("float64 full, 2 ranks vs 1 process: max |loss diff| %.3g, max relative grad-norm diff %.3g, "
              "max |weight diff| %.3g\n", loss_diff, norm_diff, wdiff);
  // The runs did train: the loss moved by far more than the tolerance.
  EXPECT_GT(std::abs(one.losses.front() - one.losses.back()), 1e3 * kTolF64);
  fs::remove_all(dir);
}

TEST(Distributed, TwoGlooRanksFollowOneProcessInFloat32Lora) {
  const auto dir = temp_dir("f32");
  ASSERT_EQ(run_ranks("f32", dir, false), 0);
  const RunOut r0 = load_out((dir / "rank0.pt").string()), r1 = load_out((dir / "rank1.pt").string());
  EXPECT_TRUE(bytes_equal(r0.weights, r1.weights)) << "ranks ended with different weights";
  const RunOut one = train_tiny("f32");
  ASSERT_EQ(r0.losses.size(), one.losses.size());
  double loss_diff = 0;
  for (size_t i = 0; i < one.losses.size(); ++i) {
    EXPECT_NEAR(r0.losses[i], one.losses[i], kTolF32Loss) << "step " << i + 1;
    EXPECT_NEAR(r0.grad_norms[i], one.grad_norms[i], kTolF32Loss * one.grad_norms[i]) << "step " << i + 1;
    loss_diff = std::max(loss_diff, std::abs(r0.losses[i] - one.losses[i]));
  }
  const double wdiff = max_abs_diff(r0.weights, one.weights);
  EXPECT_LE(wdiff, kTolF32Weights);
  std::printf("float32 LoRA, 2 ranks vs 1 process: max |loss diff| %.3g, max |weight diff| %.3g\n", loss_diff, wdiff);
  fs::remove_all(dir);
}

TEST(Distributed, ResumedTwoRankRunGivesTheBytesOfAnUninterruptedOne) {
  const auto dir = temp_dir("resume");
  ASSERT_EQ(run_ranks("dropout", dir, true), 0);
  const RunOut full = load_out((dir / "rank0.pt").string());
  // Only rank 0 wrote checkpoints (step 3 and 6), with every rank's dropout state.
  const fs::path step3 = dir / "ckpt-rank0" / "step-00000003";
  ASSERT_TRUE(fs::exists(step3 / "trainer_state.json"));
  EXPECT_TRUE(fs::exists(step3 / "torch_rng_ranks.pt"));
  EXPECT_FALSE(fs::exists(dir / "ckpt-rank1"));
  // Resume from step 3: rank 0 loads it, rank 1 (no checkpoint of its own) receives it.
  const auto dir2 = temp_dir("resume2");
  ASSERT_EQ(run_ranks("dropout", dir2, true, step3.string()), 0);
  const RunOut r0 = load_out((dir2 / "rank0.pt").string()), r1 = load_out((dir2 / "rank1.pt").string());
  EXPECT_TRUE(bytes_equal(r0.weights, full.weights)) << "resumed run differs from the uninterrupted one";
  EXPECT_TRUE(bytes_equal(r1.weights, full.weights)) << "rank 1 differs after resuming";
  EXPECT_EQ(r0.losses, full.losses);
  fs::remove_all(dir);
  fs::remove_all(dir2);
}

// Sets environment variables for one scope and restores them.
struct EnvScope {
  std::vector<std::pair<std::string, std::optional<std::string>>> saved;
  void set(const std::string& k, const char* v) {
    const char* old = std::getenv(k.c_str());
    saved.emplace_back(k, old ? std::optional<std::string>(old) : std::nullopt);
    if (v) ::setenv(k.c_str(), v, 1);
    else ::unsetenv(k.c_str());
  }
  ~EnvScope() {
    for (auto it = saved.rbegin(); it != saved.rend(); ++it) {
      if (it->second) ::setenv(it->first.c_str(), it->second->c_str(), 1);
      else ::unsetenv(it->first.c_str());
    }
  }
};

void expect_input_error_naming(const std::function<void()>& f, const std::string& name) {
  try {
    f();
    ADD_FAILURE() << "no InputError; expected one naming " << name;
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
  }
}

TEST(Distributed, BadEnvironmentNamesTheVariable) {
  {
    EnvScope env;
    env.set("WORLD_SIZE", nullptr);
    env.set("RANK", nullptr);
    EXPECT_EQ(dist::env_from_environment().world_size, 1);  // no job: one process
  }
  {
    EnvScope env;
    env.set("WORLD_SIZE", "2");
    env.set("RANK", nullptr);
    expect_input_error_naming([] { dist::env_from_environment(); }, "RANK");
  }
  {
    EnvScope env;
    env.set("WORLD_SIZE", nullptr);
    env.set("RANK", "1");
    expect_input_error_naming([] { dist::env_from_environment(); }, "WORLD_SIZE");
  }
  {
    EnvScope env;
    env.set("WORLD_SIZE", "2");
    env.set("RANK", "2");
    expect_input_error_naming([] { dist::env_from_environment(); }, "RANK='2'");
  }
  {
    EnvScope env;
    env.set("WORLD_SIZE", "two");
    env.set("RANK", "0");
    expect_input_error_naming([] { dist::env_from_environment(); }, "WORLD_SIZE='two'");
  }
  {
    EnvScope env;
    env.set("WORLD_SIZE", "2");
    env.set("RANK", "0");
    env.set("MASTER_ADDR", nullptr);
    env.set("MASTER_PORT", "29500");
    expect_input_error_naming([] { dist::env_from_environment(); }, "MASTER_ADDR");
  }
  {
    EnvScope env;
    env.set("WORLD_SIZE", "2");
    env.set("RANK", "1");
    env.set("MASTER_ADDR", "127.0.0.1");
    env.set("MASTER_PORT", "70000");
    expect_input_error_naming([] { dist::env_from_environment(); }, "MASTER_PORT='70000'");
  }
  dist::LaunchOptions lo;
  lo.nproc = 0;
  lo.argv = {"x"};
  expect_input_error_naming([&] { dist::launch_local(lo); }, "--nproc");
}

TEST(Distributed, BucketsFollowReverseParameterOrderUpToTheByteLimit) {
  // Three float32 parameters of 10, 10 and 30 values with 80-byte buckets: reversed, the 30 (120
  // bytes) is alone, then 10 + 10 fill one bucket.
  std::vector<torch::Tensor> ps = {torch::zeros({10}), torch::zeros({2, 5}), torch::zeros({30})};
  EXPECT_EQ(dist::GradientAverager(ps, 80).bucket_count(), 2u);
  EXPECT_EQ(dist::GradientAverager(ps, 1 << 20).bucket_count(), 1u);
  EXPECT_EQ(dist::GradientAverager(ps, 4).bucket_count(), 3u);
  // A dtype change starts a new bucket.
  ps.push_back(torch::zeros({1}, torch::kFloat64));
  EXPECT_EQ(dist::GradientAverager(ps, 1 << 20).bucket_count(), 2u);
  EXPECT_EQ(dist::strip_nproc({"llmopt", "run", "r.yaml", "--nproc", "2", "--nproc=3", "x=1"}),
            (std::vector<std::string>{"llmopt", "run", "r.yaml", "x=1"}));
}

}  // namespace
}  // namespace llmopt::train
