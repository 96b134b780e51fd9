// CUDA builds only (-DLLMOPT_CUDA=ON, registered by tests/cuda/cuda.cmake; CI has no GPU). The
// reference is the CPU forward of the same weights: the engine's math is fp32 on both devices, so
// the two differ only by summation order (cuBLAS vs OpenBLAS / our GEMV kernel).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "infer/generate.h"
#include "model/torch_engine.h"
#include "model/device.h"
#include "model/llama.h"
#include "model/synth.h"

namespace llmopt {
namespace {

// fp32 reassociation over K <= 512 terms of O(1) products: |err| ~ sqrt(K) * 2^-24 * |sum| ~ 1e-6;
// 1e-4 leaves two orders of margin and still catches any layout or kernel error (which is O(0.1)).
constexpr double kLogitTol = 1e-4;

ModelConfig small_config() {
  ModelConfig c;
  c.hidden_size = 128, c.num_hidden_layers = 3, c.num_attention_heads = 4, c.num_key_value_heads = 2;
  c.head_dim = 32, c.intermediate_size = 344, c.vocab_size = 500, c.max_position_embeddings = 256;
  return c;
}

torch::Tensor random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return torch::randint(0, vocab, {1, n}, gen, torch::kLong);
}

TEST(Cuda, DeviceParsing) {
  ASSERT_TRUE(torch::cuda::is_available()) << "a CUDA build's tests need a visible GPU";
  EXPECT_TRUE(model::parse_device("cuda").is_cuda());
  EXPECT_TRUE(model::parse_device("cuda:0").is_cuda());
  EXPECT_TRUE(model::parse_device("cpu").is_cpu());
  EXPECT_THROW(model::parse_device("cuda:99"), InputError);
  EXPECT_THROW(model::parse_device("cuda0"), InputError);
  EXPECT_THROW(model::parse_device("tpu"), InputError);
}

TEST(Cuda, ForwardMatchesCpu) {
  torch::NoGradGuard ng;
  const auto cfg = small_config();
  auto cpu = model::synth_model(cfg, 7);
  auto gpu = model::synth_model(cfg, 7);
  gpu->to(torch::kCUDA);
  ASSERT_TRUE(gpu->device().is_cuda());
  auto ids = random_tokens(48, cfg.vocab_size, 1);
  auto a = cpu->forward(ids);
  auto b = gpu->forward(ids.to(torch::kCUDA)).to(torch::kCPU);
  const double diff = (a - b).abs().max().item<double>();
  std::printf("synth forward: max |cpu - cuda| = %.3g\n", diff);
  EXPECT_LT(diff, kLogitTol);
  // Tokens given on the CPU follow the model to its device.
  EXPECT_LT((gpu->forward(ids).to(torch::kCPU) - a).abs().max().item<double>(), kLogitTol);
}

TEST(Cuda, CachedDecodeMatchesFullForward) {
  torch::NoGradGuard ng;
  const auto cfg = small_config();
  auto gpu = model::synth_model(cfg, 3);
  gpu->to(torch::kCUDA);
  auto ids = random_tokens(32, cfg.vocab_size, 2).to(torch::kCUDA);
  auto full = gpu->forward(ids).to(torch::kCPU);
  auto cache = gpu->make_cache(1, 32);
  ASSERT_TRUE(cache.k[0].is_cuda());
  std::vector<torch::Tensor> parts{gpu->forward(ids.narrow(1, 0, 16), &cache).to(torch::kCPU)};
  for (int64_t t = 16; t < 32; ++t) parts.push_back(gpu->forward(ids.narrow(1, t, 1), &cache).to(torch::kCPU));
  auto inc = torch::cat(parts, 1);
  EXPECT_LT((full - inc).abs().max().item<double>(), kLogitTol);
}

TEST(Cuda, GradientsMatchCpu) {
  // Training runs on the same forward; its gradients must agree across devices too. Gradient
  // entries are sums over all positions of products of O(1) terms: relative tolerance 1e-3.
  const auto cfg = small_config();
  auto cpu = model::synth_model(cfg, 11);
  auto gpu = model::synth_model(cfg, 11);
  gpu->to(torch::kCUDA);
  auto ids = random_tokens(33, cfg.vocab_size, 4);
  auto loss_of = [&](model::LlamaModel& m, const torch::Tensor& t) {
    auto logits = m.forward(t.narrow(1, 0, 32));
    return torch::nn::functional::cross_entropy(logits.view({-1, cfg.vocab_size}), t.narrow(1, 1, 32).reshape({-1}));
  };
  auto la = loss_of(*cpu, ids);
  auto lb = loss_of(*gpu, ids.to(torch::kCUDA));
  la.backward();
  lb.backward();
  EXPECT_NEAR(la.item<double>(), lb.item<double>(), 1e-5);
  const auto pa = cpu->named_parameters(), pb = gpu->named_parameters();
  int checked = 0;
  for (const auto& kv : pa) {
    const auto& ga = kv.value().grad();
    const auto gb = pb[kv.key()].grad().to(torch::kCPU);
    ASSERT_TRUE(ga.defined() && gb.defined()) << kv.key();
    const double scale = ga.abs().max().item<double>() + 1e-12;
    EXPECT_LT((ga - gb).abs().max().item<double>() / scale, 1e-3) << kv.key();
    ++checked;
  }
  EXPECT_GT(checked, 10);
}

TEST(Cuda, BenchRunsOnDevice) {
  auto gpu = model::synth_model(small_config(), 5);
  gpu->to(torch::kCUDA);
  gpu->eval();
  infer::BenchOptions bo;
  bo.prompt_tokens = 64, bo.gen_tokens = 16, bo.repetitions = 2, bo.warmup = 1;
  auto r = infer::run_bench(model::TorchEngine(gpu), bo, nullptr);
  EXPECT_GT(r.pp_tok_s, 0);
  EXPECT_GT(r.tg_tok_s, 0);
  EXPECT_GT(r.model_bytes, 0);
}

}  // namespace
}  // namespace llmopt
