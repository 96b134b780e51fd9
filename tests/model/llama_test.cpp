// Engine unit tests against an independent float64 reference forward written here with explicit
// per-head loops (no shared code with src/model beyond parameter names).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "core/error.h"
#include "core/threads.h"
#include "infer/generate.h"
#include "infer/llama_cpu.h"
#include "model/loader.h"
#include "model/fast_ops.h"
#include "model/generate.h"
#include "model/llama.h"
#include "model/synth.h"

namespace llmopt {
namespace {

ModelConfig small_config(bool bias = false) {
  ModelConfig c;
  c.hidden_size = 48;
  c.intermediate_size = 100;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 6;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 97;
  c.attention_bias = bias;
  c.rope_theta = 10000;
  return c;
}

// Float64 reference: Llama decoder following the HF modeling code's definitions.
torch::Tensor reference_forward(model::LlamaModel& m, const std::vector<int64_t>& ids) {
  torch::NoGradGuard ng;
  const auto& c = m.config();
  std::map<std::string, torch::Tensor> P;
  for (auto& p : m.named_parameters()) P[p.key()] = p.value().to(torch::kFloat64);
  const int64_t T = ids.size(), H = c.num_attention_heads, KV = c.num_key_value_heads, hd = c.head_dim;
  auto rms = [&](torch::Tensor x, torch::Tensor w) {
    return x / torch::sqrt(x.pow(2).mean(-1, true) + c.rms_norm_eps) * w;
  };
  auto rope = [&](torch::Tensor x /*[T, hd]*/) {
    auto out = x.clone();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double theta = t * std::pow(c.rope_theta, -2.0 * i / hd);
        const double a = x[t][i].item<double>(), b = x[t][i + hd / 2].item<double>();
        out[t][i] = a * std::cos(theta) - b * std::sin(theta);
        out[t][i + hd / 2] = b * std::cos(theta) + a * std::sin(theta);
      }
    return out;
  };
  auto lin = [&](torch::Tensor x, const std::string& n) {
    auto y = torch::matmul(x, P[n + ".weight"].t());
    if (P.count(n + ".bias")) y = y + P[n + ".bias"];
    return y;
  };
  auto x = P["model.embed_tokens.weight"].index_select(0, torch::tensor(ids, torch::kLong));  // [T, D]
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l);
    auto h = rms(x, P[p + ".input_layernorm.weight"]);
    auto q = lin(h, p + ".self_attn.q_proj"), k = lin(h, p + ".self_attn.k_proj"), v = lin(h, p + ".self_attn.v_proj");
    auto att = torch::zeros({T, H * hd}, torch::kFloat64);
    for (int64_t head = 0; head < H; ++head) {
      const int64_t kvh = head / (H / KV);
      auto qh = rope(q.narrow(1, head * hd, hd)), kh = rope(k.narrow(1, kvh * hd, hd)), vh = v.narrow(1, kvh * hd, hd);
      auto s = torch::matmul(qh, kh.t()) / std::sqrt(static_cast<double>(hd));
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = i + 1; j < T; ++j) s[i][j] = -INFINITY;
      att.narrow(1, head * hd, hd).copy_(torch::matmul(torch::softmax(s, -1), vh));
    }
    x = x + lin(att, p + ".self_attn.o_proj");
    h = rms(x, P[p + ".post_attention_layernorm.weight"]);
    auto g = lin(h, p + ".mlp.gate_proj"), u = lin(h, p + ".mlp.up_proj");
    x = x + lin(g * torch::sigmoid(g) * u, p + ".mlp.down_proj");
  }
  x = rms(x, P["model.norm.weight"]);
  auto head = P.count("lm_head.weight") ? P["lm_head.weight"] : P["model.embed_tokens.weight"];
  return torch::matmul(x, head.t());
}

// Tolerance: fp32 forward vs float64 reference over 2 layers with |logits| ~ 1e-1; fp32 relative
// precision 6e-8 times reduction depth ~1e2 and the softmax/norm amplification keeps errors < 1e-5.
constexpr double kFp32VsF64Tol = 1e-5;

TEST(Llama, ForwardMatchesFloat64Reference) {
  for (bool bias : {false, true}) {
    auto cfg = small_config(bias);
    cfg.tie_word_embeddings = bias;  // cover both head variants
    auto m = model::synth_model(cfg, 7);
    // Larger weights than synth's 0.02 make attention patterns non-trivial.
    {
      torch::NoGradGuard ng;
      for (auto& p : m->parameters()) p.mul_(10);
    }
    std::vector<int64_t> ids = {3, 17, 42, 5, 96, 0, 11, 11, 64};
    torch::NoGradGuard ng;
    auto ours = m->forward(torch::tensor(ids, torch::kLong).view({1, -1}))[0].to(torch::kFloat64);
    auto ref = reference_forward(*m, ids);
    const double scale = ref.abs().max().item<double>();
    EXPECT_LT((ours - ref).abs().max().item<double>(), kFp32VsF64Tol * std::max(1.0, scale)) << "bias=" << bias;
  }
}

// The fused single-token CPU step (no autograd, one token, a cache: src/model/decode_cpu.cpp)
// against the float64 reference at every position, for both bias/tied variants and GQA; and
// bit-identical for 1, 2 and 3 threads (rows and heads are each computed by one thread).
TEST(Llama, FusedDecodeMatchesFloat64ReferenceAndThreadCounts) {
  for (bool bias : {false, true}) {
    auto cfg = small_config(bias);
    cfg.tie_word_embeddings = bias;
    auto m = model::synth_model(cfg, 9);
    torch::NoGradGuard ng;
    for (auto& p : m->parameters()) p.mul_(10);
    const std::vector<int64_t> ids = {3, 17, 42, 5, 96, 0, 11, 11, 64};
    auto ref = reference_forward(*m, ids);
    const double tol = kFp32VsF64Tol * std::max(1.0, ref.abs().max().item<double>());
    std::vector<torch::Tensor> by_threads;
    for (int threads : {1, 2, 3}) {
      set_threads(threads);
      auto cache = m->make_cache(1, 16);
      std::vector<torch::Tensor> rows;
      for (int64_t id : ids) rows.push_back(m->forward(torch::full({1, 1}, id, torch::kLong), &cache)[0][0]);
      auto all = torch::stack(rows);
      EXPECT_LT((all.to(torch::kFloat64) - ref).abs().max().item<double>(), tol) << "bias=" << bias;
      by_threads.push_back(all);
    }
    set_threads(1);
    EXPECT_TRUE(torch::equal(by_threads[0], by_threads[1])) << "1 vs 2 threads, bias=" << bias;
    EXPECT_TRUE(torch::equal(by_threads[0], by_threads[2])) << "1 vs 3 threads, bias=" << bias;
  }
}

// The torch-free CPU engine (src/infer, what `llmopt generate|bench` run on the CPU) on the same
// weights, against the float64 reference (the torch engine's forward for Llama-3.1 RoPE scaling):
// prefill of every prefix, prefill continued from a
// filled cache, and decode; with GQA, q/k/v biases + tied embeddings, and Llama-3.1 RoPE scaling.
// Decode is bit-identical for 1, 2 and 3 threads; prefill (OpenBLAS GEMMs) within the tolerance.
TEST(CpuLlama, PrefillAndDecodeMatchFloat64Reference) {
  for (int variant = 0; variant < 3; ++variant) {
    SCOPED_TRACE("variant " + std::to_string(variant));
    auto cfg = small_config(variant == 1);
    cfg.tie_word_embeddings = variant == 1;
    if (variant == 2) {
      cfg.rope_scaling.type = "llama3";
      cfg.rope_scaling.factor = 8;
      cfg.rope_scaling.original_max_position_embeddings = 16;
      cfg.rope_theta = 500000;
    }
    auto m = model::synth_model(cfg, 11 + variant);
    torch::NoGradGuard ng;
    for (auto& p : m->parameters()) p.mul_(10);
    const std::vector<int64_t> ids = {3, 17, 42, 5, 96, 0, 11, 11, 64};
    const int64_t T = static_cast<int64_t>(ids.size());
    // The float64 reference knows plain RoPE only; with Llama-3.1 scaling the torch engine's full
    // forward is the reference (the scaled frequencies themselves: tests/infer/rope_test.cpp).
    auto ref = variant == 2 ? m->forward(torch::tensor(ids, torch::kLong).view({1, -1}))[0].to(torch::kFloat64)
                            : reference_forward(*m, ids);
    const double tol = kFp32VsF64Tol * std::max(1.0, ref.abs().max().item<double>());
    infer::CpuLlama cl(model::model_to_checkpoint(*m));
    const int64_t V = cfg.vocab_size;
    std::vector<float> logits(V);
    auto diff = [&](int64_t t) {
      double d = 0;
      for (int64_t j = 0; j < V; ++j) d = std::max(d, std::fabs(logits[j] - ref[t][j].item<double>()));
      return d;
    };
    std::vector<std::vector<float>> decoded_by_threads;
    for (int threads : {1, 2, 3}) {
      set_threads(threads);
      for (int64_t t = 1; t <= T; ++t) {  // every prefix in one prefill
        auto cache = cl.make_cache(T);
        cl.prefill(ids.data(), t, *cache, logits.data());
        EXPECT_LT(diff(t - 1), tol) << "prefill of " << t << " tokens, threads " << threads;
      }
      auto cache = cl.make_cache(T);  // 5 tokens, then 3 more on top, then decode the last
      cl.prefill(ids.data(), 5, *cache, logits.data());
      EXPECT_LT(diff(4), tol);
      cl.prefill(ids.data() + 5, 3, *cache, logits.data());
      EXPECT_LT(diff(7), tol) << "prefill continued at position 5";
      cl.decode(ids[8], *cache, logits.data());
      EXPECT_LT(diff(8), tol) << "decode after prefill";
      auto dcache = cl.make_cache(T);
      std::vector<float> all;
      for (int64_t t = 0; t < T; ++t) {
        cl.decode(ids[t], *dcache, logits.data());
        EXPECT_LT(diff(t), tol) << "decode at " << t;
        all.insert(all.end(), logits.begin(), logits.end());
      }
      decoded_by_threads.push_back(all);
      EXPECT_THROW(cl.decode(1, *dcache, logits.data()), InputError);  // cache full
    }
    set_threads(1);
    EXPECT_EQ(decoded_by_threads[0], decoded_by_threads[1]);
    EXPECT_EQ(decoded_by_threads[0], decoded_by_threads[2]);
    auto cache = cl.make_cache(T);
    const int64_t bad = V;
    EXPECT_THROW(cl.prefill(&bad, 1, *cache, logits.data()), InputError);
  }
}

// Both engines sample with infer::Sampler: the same seed gives the same tokens.
TEST(CpuLlama, SampledGenerationEqualsTorchEngine) {
  auto m = model::synth_model(small_config(), 5);
  infer::CpuLlama cl(model::model_to_checkpoint(*m));
  model::SamplingOptions s;
  s.temperature = 0.8;
  s.top_k = 40;
  s.seed = 42;
  s.max_new_tokens = 24;
  EXPECT_EQ(infer::generate(cl, {1, 2, 3}, s), model::generate(*m, {1, 2, 3}, s));
}

TEST(Llama, KvCacheDecodeEqualsFullForward) {
  auto m = model::synth_model(small_config(), 3);
  torch::NoGradGuard ng;
  std::vector<int64_t> ids = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  auto full = m->forward(torch::tensor(ids, torch::kLong).view({1, -1}))[0];
  auto cache = m->make_cache(1, 16);
  // Prefill 4 tokens, then one at a time.
  auto part = m->forward(torch::tensor(std::vector<int64_t>(ids.begin(), ids.begin() + 4), torch::kLong).view({1, -1}), &cache)[0];
  EXPECT_LT((part - full.narrow(0, 0, 4)).abs().max().item<double>(), 1e-5);
  for (size_t i = 4; i < ids.size(); ++i) {
    auto step = m->forward(torch::full({1, 1}, ids[i], torch::kLong), &cache)[0][0];
    EXPECT_LT((step - full[i]).abs().max().item<double>(), 1e-5) << "position " << i;
  }
  EXPECT_EQ(cache.length, 10);
  EXPECT_THROW(m->forward(torch::ones({1, 7}, torch::kLong), &cache), InputError);
}

TEST(Llama, FastLinearMatchesTorchLinear) {
  torch::NoGradGuard ng;
  auto gen = at::detail::createCPUGenerator(1);
  for (int64_t rows : {1, 3, 8, 9}) {
    auto w = torch::randn({37, 53}, gen), b = torch::randn({37}, gen), x = torch::randn({rows, 53}, gen);
    auto ref = torch::linear(x.to(torch::kFloat64), w.to(torch::kFloat64), b.to(torch::kFloat64));
    auto got = model::linear_f32(x, w, b).to(torch::kFloat64);
    // k=53 products of N(0,1) values: |error| <= 53 * 2^-24 * sum|w x| ~ 1e-4 bound, use 1e-4.
    EXPECT_LT((got - ref).abs().max().item<double>(), 1e-4) << rows;
  }
}

TEST(Llama, SetLinearReplacesAndChecksShape) {
  auto m = model::synth_model(small_config(), 1);
  auto layers = m->linear_layers();
  EXPECT_EQ(layers.size(), 2u * 7u + 1u);
  EXPECT_EQ(layers[0].first, "model.layers.0.self_attn.q_proj");
  auto zero = std::make_shared<model::DenseLinear>(torch::zeros({100, 48}));
  m->set_linear("model.layers.1.mlp.up_proj", zero);
  bool found = false;
  for (auto& p : m->named_parameters())
    if (p.key() == "model.layers.1.mlp.up_proj.weight") found = p.value().abs().sum().item<double>() == 0.0;
  EXPECT_TRUE(found);
  EXPECT_THROW(m->set_linear("model.layers.1.mlp.down_proj", zero), InputError);
  EXPECT_THROW(m->set_linear("model.layers.9.mlp.up_proj", zero), InputError);
}

TEST(Sampling, GreedyTopKTopPAndSeeds) {
  auto logits = torch::tensor({0.1f, 2.0f, -1.0f, 1.9f, 0.0f});
  model::Sampler rng(0);
  model::SamplingOptions g;
  EXPECT_EQ(model::sample_token(logits, g, rng), 1);
  model::SamplingOptions k1;
  k1.temperature = 1.0;
  k1.top_k = 1;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(model::sample_token(logits, k1, rng), 1);
  model::SamplingOptions p;
  p.temperature = 1.0;
  p.top_p = 0.3;  // the top token alone holds ~44% of the mass
  for (int i = 0; i < 20; ++i) EXPECT_EQ(model::sample_token(logits, p, rng), 1);
  model::SamplingOptions k2;
  k2.temperature = 1.0;
  k2.top_k = 2;
  for (int i = 0; i < 50; ++i) {
    const auto t = model::sample_token(logits, k2, rng);
    EXPECT_TRUE(t == 1 || t == 3);
  }
  auto m = model::synth_model(small_config(), 5);
  model::SamplingOptions s;
  s.temperature = 1.0;
  s.seed = 42;
  s.max_new_tokens = 12;
  EXPECT_EQ(model::generate(*m, {1, 2, 3}, s), model::generate(*m, {1, 2, 3}, s));
}

TEST(LlamaModel, SlidingWindowMatchesTheWindowedSequence) {
  // One layer: the logits at position q depend only on tokens q-W+1..q, and RoPE scores depend
  // only on relative positions, so they equal the last logits of the unwindowed model run on
  // exactly those tokens (an independent computation of the window's definition).
  ModelConfig c = small_config();
  c.num_hidden_layers = 1;
  c.sliding_window = 4;
  auto m = model::synth_model(c, 21);
  ModelConfig full = c;
  full.sliding_window = 0;
  auto ref = model::synth_model(full, 21);
  torch::NoGradGuard ng;
  const std::vector<int64_t> ids = {3, 17, 45, 8, 90, 12, 5, 61, 33, 2};
  const auto all = m->forward(torch::tensor(ids, torch::kLong).unsqueeze(0))[0];
  auto cache = m->make_cache(1, 16);
  for (size_t q = 0; q < ids.size(); ++q) {
    const size_t lo = q + 1 > 4 ? q + 1 - 4 : 0;
    std::vector<int64_t> win(ids.begin() + static_cast<long>(lo), ids.begin() + static_cast<long>(q) + 1);
    const auto want = ref->forward(torch::tensor(win, torch::kLong).unsqueeze(0))[0][-1];
    EXPECT_LT((all[static_cast<long>(q)] - want).abs().max().item<float>(), 1e-4f) << "position " << q;
    // Token by token through the cache (the decode path) too.
    const auto step = m->forward(torch::tensor({ids[q]}, torch::kLong).unsqueeze(0), &cache)[0][0];
    EXPECT_LT((step - want).abs().max().item<float>(), 1e-4f) << "decode position " << q;
  }
  // Without the window the far past matters: the same model differs at the last position.
  const auto unwindowed = ref->forward(torch::tensor(ids, torch::kLong).unsqueeze(0))[0][-1];
  EXPECT_GT((all[-1] - unwindowed).abs().max().item<float>(), 1e-3f);
}

}  // namespace
}  // namespace llmopt
