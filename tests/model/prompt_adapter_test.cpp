// Prompt-learning adapters (prompt / prefix / P-tuning): gradients of their parameters against
// central finite differences of the loss in float64 on a tiny grouped-query model; the forward
// semantics against the base model run on a longer sequence (virtual tokens that are real token
// embeddings, prefixes that are the keys and values the base model caches for real tokens); the
// KV-cache path (generic and fused single-token step) against the cache-free one; the bench loop
// over the torch engine; stage-state and PEFT-file round trips; bad adapters.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/threads.h"
#include "infer/generate.h"
#include "io/safetensors.h"
#include "model/decode_cpu.h"
#include "model/prompt_adapter.h"
#include "model/state_io.h"
#include "model/synth.h"
#include "model/torch_engine.h"

namespace llmopt {
namespace {
namespace fs = std::filesystem;
using model::PromptAdapter;
using model::PromptAdapterConfig;

ModelConfig tiny_config() {
  ModelConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;  // grouped-query: prefix token_dim is kv_heads*head_dim = 16
  c.head_dim = 8;
  c.vocab_size = 50;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = false;
  return c;
}

fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("llmopt_prompt_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

PromptAdapterConfig cfg_of(const std::string& method, int64_t n, int64_t hidden = 0) {
  PromptAdapterConfig c;
  c.method = method;
  c.num_virtual_tokens = n;
  c.encoder_hidden = hidden;
  return c;
}

double loss_of(model::LlamaModel& m, const torch::Tensor& tokens) {
  torch::NoGradGuard g;
  auto logits = m.forward(tokens.slice(1, 0, -1));
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), tokens.slice(1, 1).reshape({-1}))
      .item<double>();
}

// Central differences in float64, step h: truncation error h^2/6 |L'''| and rounding error
// eps |L| K / h, with eps = 2.2e-16, |L| ~ 4 (cross entropy over 50 tokens), K ~ 10^3 operations
// accumulating into the loss and |L'''| = O(10^2) for these O(1) parameters: with h = 1e-5 both
// stay below 1e-7, so the tolerance 1e-6 + 1e-5 |g| leaves a factor of 10 on top.
constexpr double kStep = 1e-5;
constexpr double kAbsTol = 1e-6;
constexpr double kRelTol = 1e-5;

// Checks every element of every parameter with at most `max_per_param` elements, else 3 of them.
void check_gradients(const PromptAdapterConfig& cfg, uint64_t seed, int64_t max_per_param = 256) {
  auto m = model::synth_model(tiny_config(), seed);
  auto a = model::apply_prompt_adapter(*m, cfg, seed + 1);
  m->to(torch::kFloat64);
  m->train();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed + 2);
  const torch::Tensor tokens = torch::randint(0, 50, {2, 9}, gen, torch::kInt64);
  // Only the adapter trains.
  for (auto& p : m->named_parameters())
    EXPECT_EQ(p.value().requires_grad(), p.key().rfind("prompt_encoder.", 0) == 0) << p.key();
  {
    auto logits = m->forward(tokens.slice(1, 0, -1));
    ASSERT_EQ(logits.size(1), 8);  // logits of the real tokens only
    auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                     tokens.slice(1, 1).reshape({-1}));
    loss.backward();
  }
  int checked = 0;
  double worst = 0;
  for (auto& p : a->named_parameters()) {
    torch::Tensor t = p.value();
    ASSERT_TRUE(t.grad().defined()) << p.key();
    ASSERT_EQ(t.scalar_type(), torch::kFloat64);
    auto flat = t.view({-1});
    auto gflat = t.grad().view({-1});
    std::vector<int64_t> idx;
    if (flat.numel() <= max_per_param) {
      for (int64_t k = 0; k < flat.numel(); ++k) idx.push_back(k);
    } else {
      idx = {0, flat.numel() / 2, flat.numel() - 1};
    }
    for (int64_t k : idx) {
      const double orig = flat[k].item<double>();
      auto eval_at = [&](double v) {
        torch::NoGradGuard g;
        flat[k].fill_(v);
        const double l = loss_of(*m, tokens);
        flat[k].fill_(orig);
        return l;
      };
      const double fd = (eval_at(orig + kStep) - eval_at(orig - kStep)) / (2 * kStep);
      const double ad = gflat[k].item<double>();
      EXPECT_NEAR(ad, fd, kAbsTol + kRelTol * std::abs(fd)) << cfg.method << " " << p.key() << "[" << k << "]";
      worst = std::max(worst, std::abs(ad - fd));
      ++checked;
    }
    // A gradient that is zero everywhere would pass trivially.
    EXPECT_GT(t.grad().abs().max().item<double>(), 1e-4) << p.key();
  }
  EXPECT_GT(checked, 0);
  std::printf("[prompt grad] %s: %d elements, max |autograd - fd| = %.3g\n", cfg.method.c_str(), checked, worst);
}

TEST(PromptAdapter, PromptTuningGradientsMatchFiniteDifferences) { check_gradients(cfg_of("prompt", 3), 11); }
TEST(PromptAdapter, PrefixTuningGradientsMatchFiniteDifferences) { check_gradients(cfg_of("prefix", 3), 12); }
TEST(PromptAdapter, PTuningGradientsMatchFiniteDifferences) { check_gradients(cfg_of("ptuning", 3, 12), 13, 64); }

// Prompt tuning with virtual tokens equal to the embeddings of real tokens u is the base model run
// on [u, tokens]; its logits of the last T positions are the adapter model's.
TEST(PromptAdapter, VirtualTokensActAsPrependedTokens) {
  const auto tokens = torch::randint(0, 50, {2, 6}, torch::kInt64);
  auto model_of = [](int64_t n, const std::vector<int64_t>& ids) {
    auto m = model::synth_model(tiny_config(), 21);
    m->to(torch::kFloat64);
    m->eval();
    if (n > 0) {
      PromptAdapterConfig c = cfg_of("prompt", n);
      c.init = "text";
      c.init_text = "(ids given)";
      model::apply_prompt_adapter(*m, c, 0, ids);
    }
    return m;
  };
  torch::NoGradGuard g;
  auto base_on = [&](const std::vector<int64_t>& u) {
    const int64_t n = static_cast<int64_t>(u.size());
    return model_of(0, {})->forward(torch::cat({torch::tensor(u).view({1, -1}).expand({2, -1}), tokens}, 1)).narrow(1, n, 6);
  };
  // PEFT's text init: ids cut to n, or repeated and cut.
  EXPECT_LT((model_of(4, {7, 3, 41, 3, 9, 9})->forward(tokens) - base_on({7, 3, 41, 3})).abs().max().item<double>(),
            1e-10);
  EXPECT_LT((model_of(6, {7, 3, 41, 3})->forward(tokens) - base_on({7, 3, 41, 3, 7, 3})).abs().max().item<double>(),
            1e-10);
}

// Prefix tuning with each layer's prefix equal to the keys / values the base model caches for real
// tokens u (after RoPE at positions 0..n-1) is the base model run on [u, tokens]: checks PEFT's
// [n, layers*2*kv_heads*head_dim] layout (layer l's keys in row 2l, values in 2l+1) and that real
// tokens take positions n.. . Float32 (the cache is float32): tolerance 2e-5 for logits of size
// O(1) after ~10^2 float32 accumulations (1.2e-7 each).
TEST(PromptAdapter, PrefixActsAsCachedTokens) {
  const ModelConfig mc = tiny_config();
  auto base = model::synth_model(mc, 22);
  base->eval();
  torch::NoGradGuard g;
  const int64_t n = 5, T = 7;
  const auto u = torch::randint(0, 50, {1, n}, torch::kInt64);
  const auto tokens = torch::randint(0, 50, {1, T}, torch::kInt64);
  const auto want = base->forward(torch::cat({u, tokens}, 1)).narrow(1, n, T);
  auto cache = base->make_cache(1, n);
  base->forward(u, &cache);
  std::vector<torch::Tensor> per_layer;
  for (int64_t l = 0; l < mc.num_hidden_layers; ++l) {
    auto k = cache.k[l][0].narrow(1, 0, n).permute({1, 0, 2});  // [n, KV, hd]
    auto v = cache.v[l][0].narrow(1, 0, n).permute({1, 0, 2});
    per_layer.push_back(torch::stack({k, v}, 1));  // [n, 2, KV, hd]
  }
  const auto flat = torch::stack(per_layer, 1).reshape({n, -1}).contiguous();  // [n, L*2*KV*hd]
  ASSERT_EQ(flat.size(1), 2 * 2 * 2 * 8);
  auto m = model::synth_model(mc, 22);
  m->eval();
  m->set_prompt_adapter(std::make_shared<PromptAdapter>(cfg_of("prefix", n), mc, flat, "test"));
  const auto got = m->forward(tokens);
  EXPECT_LT((got - want).abs().max().item<double>(), 2e-5);
  // The cache path: prefill 3 tokens, then one at a time.
  auto c2 = m->make_cache(1, T);
  EXPECT_EQ(c2.capacity, n + T);
  auto step = m->forward(tokens.narrow(1, 0, 3), &c2);
  std::vector<torch::Tensor> parts = {step};
  for (int64_t t = 3; t < T; ++t) parts.push_back(m->forward(tokens.narrow(1, t, 1), &c2));
  EXPECT_EQ(c2.length, n + T);
  EXPECT_LT((torch::cat(parts, 1) - want).abs().max().item<double>(), 2e-5);
}

// The cache path of prompt tuning and P-tuning (virtual tokens run through the model into the
// cache's reserved positions) gives the cache-free logits.
TEST(PromptAdapter, CachedDecodingMatchesFullForward) {
  for (const std::string method : {"prompt", "ptuning"}) {
    auto m = model::synth_model(tiny_config(), 23);
    model::apply_prompt_adapter(*m, cfg_of(method, 4, 16), 5);
    m->eval();
    torch::NoGradGuard g;
    const auto tokens = torch::randint(0, 50, {1, 9}, torch::kInt64);
    const auto want = m->forward(tokens);
    auto cache = m->make_cache(1, 9);
    std::vector<torch::Tensor> parts = {m->forward(tokens.narrow(1, 0, 2), &cache)};
    for (int64_t t = 2; t < 9; ++t) parts.push_back(m->forward(tokens.narrow(1, t, 1), &cache));
    EXPECT_LT((torch::cat(parts, 1) - want).abs().max().item<double>(), 2e-5) << method;
  }
}

// The torch engine (generate, eval, bench) over a model with an adapter: its cache counts real
// tokens only, truncate(0) keeps the virtual ones, prefill + decode give the model's logits.
TEST(PromptAdapter, TorchEngineCacheHoldsVirtualTokens) {
  for (const std::string method : {"prompt", "prefix"}) {
    auto m = model::synth_model(tiny_config(), 24);
    model::apply_prompt_adapter(*m, cfg_of(method, 3), 6);
    m->eval();
    torch::NoGradGuard g;
    const std::vector<int64_t> ids = {1, 17, 4, 33, 8, 20};
    const auto want = m->forward(torch::tensor(ids).view({1, -1}))[0];  // [6, V]
    model::TorchEngine engine(m);
    auto cache = engine.make_cache(6);
    EXPECT_EQ(cache->capacity(), 6);
    std::vector<float> logits(6 * 50);
    for (int round = 0; round < 2; ++round) {  // the second round after truncate(0)
      engine.prefill(ids.data(), 4, *cache, logits.data(), /*all_positions=*/true);
      EXPECT_EQ(cache->length(), 4);
      engine.decode(ids[4], *cache, logits.data() + 4 * 50);
      engine.decode(ids[5], *cache, logits.data() + 5 * 50);
      EXPECT_EQ(cache->length(), 6);
      const auto got = torch::from_blob(logits.data(), {6, 50}, torch::kFloat32);
      EXPECT_LT((got - want).abs().max().item<double>(), 2e-5) << method << " round " << round;
      cache->truncate(0);
      EXPECT_EQ(cache->length(), 0);
    }
  }
}

// The fused single-token CPU step (decode_cpu.cpp) with each adapter kind: the cache's first n
// positions hold the virtual tokens, real tokens decode at positions n.. up to the last position
// of the cache (capacity n + T, so the last step writes the cache's final row). Each step equals
// the generic cached path (forward_hidden, the same cache layout) and the cache-free forward.
// Float32 on both sides with different summation orders (SIMD dots in decode_step, torch's
// matmuls): ~10^2 float32 accumulations of O(1) terms per logit, rounding 6e-8 each, so 2e-5 of
// the logits' scale (as CachedDecodingMatchesFullForward). The step is bit-identical for 1 and 3
// threads. One more token is an InputError (overflow) that writes nothing.
TEST(PromptAdapter, FusedDecodeMatchesGenericCachedPathAndFullForward) {
  const int64_t n = 5, T = 11;
  for (const std::string method : {"prompt", "prefix", "ptuning"}) {
    SCOPED_TRACE(method);
    auto m = model::synth_model(tiny_config(), 25);
    model::apply_prompt_adapter(*m, cfg_of(method, n, 16), 8);
    m->eval();
    torch::NoGradGuard g;
    const auto tokens = torch::randint(0, 50, {1, T}, torch::kInt64);
    const auto want = m->forward(tokens)[0];  // cache-free [T, V]
    const double tol = 2e-5 * std::max(1.0, want.abs().max().item<double>());
    // The generic cached path, one token at a time.
    auto generic_cache = m->make_cache(1, T);
    std::vector<torch::Tensor> generic;
    for (int64_t t = 0; t < T; ++t)
      generic.push_back(m->logits_from_hidden(m->forward_hidden(tokens.narrow(1, t, 1), &generic_cache))[0][0]);
    const auto generic_all = torch::stack(generic);
    EXPECT_LT((generic_all - want).abs().max().item<double>(), tol);
    std::vector<torch::Tensor> by_threads;
    for (int threads : {1, 3}) {
      set_threads(threads);
      auto cache = m->make_cache(1, T);
      ASSERT_EQ(cache.capacity, n + T);
      const int64_t fused_before = model::fused_decode_steps();
      std::vector<torch::Tensor> rows;
      for (int64_t t = 0; t < T; ++t) rows.push_back(m->forward(tokens.narrow(1, t, 1), &cache)[0][0]);
      EXPECT_EQ(model::fused_decode_steps() - fused_before, T) << "every step took the fused path";
      EXPECT_EQ(cache.length, cache.capacity);
      const auto all = torch::stack(rows);
      const double vs_full = (all - want).abs().max().item<double>();
      const double vs_generic = (all - generic_all).abs().max().item<double>();
      std::printf("[fused decode] %s, %d threads: max |fused - cache-free| = %.3g, |fused - generic cached| = %.3g "
                  "(tolerance %.3g)\n",
                  method.c_str(), threads, vs_full, vs_generic, tol);
      EXPECT_LT(vs_full, tol);
      EXPECT_LT(vs_generic, tol);
      // The cache rows the fused steps wrote are those the generic path wrote.
      for (int64_t l = 0; l < 2; ++l) {
        EXPECT_LT((cache.k[l] - generic_cache.k[l]).abs().max().item<double>(), tol);
        EXPECT_LT((cache.v[l] - generic_cache.v[l]).abs().max().item<double>(), tol);
      }
      const auto k_before = cache.k[0].clone();
      EXPECT_THROW(m->forward(tokens.narrow(1, 0, 1), &cache), InputError);
      EXPECT_EQ(cache.length, cache.capacity);
      EXPECT_TRUE(torch::equal(cache.k[0], k_before));
      by_threads.push_back(all);
    }
    set_threads(1);
    EXPECT_TRUE(torch::equal(by_threads[0], by_threads[1])) << "1 vs 3 threads";
  }
}

// `llmopt bench --adapter` as it runs: infer::run_bench over the torch engine (prefill, then
// truncate(0) keeping the virtual tokens, then decode on the fused step, repeated after a
// warm-up). With a prefix adapter this once ended in heap corruption (the step
// ran out of the cache; under AddressSanitizer, scripts/sanitize.sh, this test is the check).
TEST(PromptAdapter, BenchLoopOverTorchEngineWithEachAdapter) {
  for (const std::string method : {"prompt", "prefix", "ptuning"}) {
    SCOPED_TRACE(method);
    auto m = model::synth_model(tiny_config(), 26);
    model::apply_prompt_adapter(*m, cfg_of(method, 6, 16), 9);
    m->eval();
    infer::BenchOptions o;
    o.prompt_tokens = 12;
    o.gen_tokens = 11;  // the cache holds max(12, 11 + 1) real positions: prefill fills it
    o.repetitions = 2;
    o.warmup = 1;
    const int64_t fused_before = model::fused_decode_steps();
    const infer::BenchResult r = infer::run_bench(model::TorchEngine(m), o);
    EXPECT_EQ(model::fused_decode_steps() - fused_before, (o.repetitions + o.warmup) * o.gen_tokens);
    EXPECT_GT(r.tg_tok_s, 0);
    EXPECT_GT(r.pp_tok_s, 0);
  }
}

// P-tuning's virtual tokens are PEFT's PromptEncoder MLP: Linear, ReLU, Linear, ReLU, Linear
// (mlp_head.0 / .2 / .4), computed here in float64 from its parameters.
TEST(PromptAdapter, PTuningEncoderIsPeftsMlp) {
  const ModelConfig mc = tiny_config();
  PromptAdapter a(cfg_of("ptuning", 4, 12), mc, 3);
  std::map<std::string, torch::Tensor> p;
  for (auto& kv : a.named_parameters()) p[kv.key()] = kv.value().detach().to(torch::kFloat64);
  ASSERT_EQ(p.size(), 7u);
  EXPECT_EQ(p["mlp_head.0.weight"].sizes(), (std::vector<int64_t>{12, 32}));
  EXPECT_EQ(p["mlp_head.2.weight"].sizes(), (std::vector<int64_t>{12, 12}));
  EXPECT_EQ(p["mlp_head.4.weight"].sizes(), (std::vector<int64_t>{32, 12}));
  auto lin = [&](const torch::Tensor& x, const std::string& i) {
    return torch::matmul(x, p["mlp_head." + i + ".weight"].t()) + p["mlp_head." + i + ".bias"];
  };
  const auto want = lin(torch::relu(lin(torch::relu(lin(p["embedding.weight"], "0")), "2")), "4");
  torch::NoGradGuard g;
  EXPECT_LT((a.virtual_embeddings().to(torch::kFloat64) - want).abs().max().item<double>(), 1e-5);
  // torch.nn.Linear's init bound 1/sqrt(in).
  EXPECT_LE(p["mlp_head.0.weight"].abs().max().item<double>(), 1 / std::sqrt(32.0));
  EXPECT_LE(p["mlp_head.2.bias"].abs().max().item<double>(), 1 / std::sqrt(12.0));
}

TEST(PromptAdapter, StateAndPeftFilesRoundTrip) {
  const auto dir = temp_dir("roundtrip");
  const ModelConfig mc = tiny_config();
  const auto tokens = torch::randint(0, 50, {1, 10}, torch::kInt64);
  for (const std::string method : {"prompt", "prefix", "ptuning"}) {
    auto m = model::synth_model(mc, 31);
    model::apply_prompt_adapter(*m, cfg_of(method, 3, 20), 7);
    m->eval();
    torch::NoGradGuard g;
    const auto logits = m->forward(tokens);
    // The adapter moves the logits.
    auto plain = model::synth_model(mc, 31);
    EXPECT_GT((plain->forward(tokens) - logits).abs().max().item<double>(), 1e-3) << method;
    // Stage checkpoint: as stored (the P-tuning MLP included), bit-identical logits.
    const auto sd = dir / (method + "-state");
    model::save_model_state(*m, sd.string());
    auto back = model::load_model_state(sd.string());
    ASSERT_NE(back->prompt_adapter(), nullptr) << method;
    EXPECT_EQ(back->prompt_adapter()->has_encoder(), method == "ptuning");
    EXPECT_TRUE(torch::equal(back->forward(tokens), logits)) << method;
    auto copy = model::clone_model(*m);
    EXPECT_TRUE(torch::equal(copy->forward(tokens), logits)) << method;
    // PEFT files.
    const auto ad = dir / (method + "-adapter");
    model::save_prompt_adapter(*m, ad.string(), {"base"});
    std::ifstream in(ad / "adapter_config.json");
    const auto j = nlohmann::json::parse(in);
    EXPECT_EQ(j["peft_type"], method == "prompt" ? "PROMPT_TUNING" : method == "prefix" ? "PREFIX_TUNING" : "P_TUNING");
    EXPECT_EQ(j["task_type"], "CAUSAL_LM");
    EXPECT_EQ(j["num_virtual_tokens"], 3);
    EXPECT_EQ(j["num_transformer_submodules"], 1);
    EXPECT_EQ(j["num_layers"], 2);
    EXPECT_EQ(j["token_dim"], method == "prefix" ? 16 : 32);
    EXPECT_EQ(j["num_attention_heads"], method == "prefix" ? 2 : 4);
    const auto st = io::SafetensorsFile::open((ad / "adapter_model.safetensors").string());
    ASSERT_EQ(st.tensors().size(), 1u);
    const auto* t = st.find("prompt_embeddings");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->shape, (std::vector<int64_t>{3, method == "prefix" ? 2 * 2 * 16 : 32}));
    auto fresh = model::synth_model(mc, 31);
    fresh->eval();
    model::load_any_adapter(*fresh, ad.string());
    ASSERT_NE(fresh->prompt_adapter(), nullptr);
    EXPECT_FALSE(fresh->prompt_adapter()->has_encoder());  // P-tuning loads as its output embeddings
    EXPECT_LT((fresh->forward(tokens) - logits).abs().max().item<double>(), 1e-6) << method;
  }
  fs::remove_all(dir);
}

void expect_input_error(const std::function<void()>& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    for (const auto& s : needles) EXPECT_NE(std::string(e.what()).find(s), std::string::npos) << e.what();
  }
}

TEST(PromptAdapter, BadInputIsInputError) {
  const auto dir = temp_dir("bad");
  const ModelConfig mc = tiny_config();
  auto m = model::synth_model(mc, 41);
  expect_input_error([&] { model::apply_prompt_adapter(*m, cfg_of("prompt", 0), 1); }, {"num_virtual_tokens"});
  expect_input_error([&] { model::apply_prompt_adapter(*m, cfg_of("suffix", 4), 1); }, {"method", "suffix"});
  // A prefix adapter written for this model, loaded onto bases it does not fit.
  model::apply_prompt_adapter(*m, cfg_of("prefix", 4), 1);
  model::save_prompt_adapter(*m, (dir / "a").string(), {"base"});
  auto wider = mc;
  wider.hidden_size = 48;
  wider.head_dim = 12;
  expect_input_error([&] { model::load_any_adapter(*model::synth_model(wider, 1), (dir / "a").string()); },
                     {"adapter_config.json", "token_dim", "24"});
  auto deeper = mc;
  deeper.num_hidden_layers = 3;
  expect_input_error([&] { model::load_any_adapter(*model::synth_model(deeper, 1), (dir / "a").string()); },
                     {"num_layers", "3"});
  // Config consistent with the base but the tensor is not: named.
  {
    std::ifstream in(dir / "a" / "adapter_config.json");
    auto j = nlohmann::json::parse(in);
    j["num_virtual_tokens"] = 5;
    std::ofstream(dir / "a" / "adapter_config.json") << j.dump();
  }
  expect_input_error([&] { model::load_any_adapter(*model::synth_model(mc, 1), (dir / "a").string()); },
                     {"prompt_embeddings", "[4, 64]", "[5, 64]"});
  {
    std::ifstream in(dir / "a" / "adapter_config.json");
    auto j = nlohmann::json::parse(in);
    j["num_virtual_tokens"] = 0;
    std::ofstream(dir / "a" / "adapter_config.json") << j.dump();
  }
  expect_input_error([&] { model::load_any_adapter(*model::synth_model(mc, 1), (dir / "a").string()); },
                     {"num_virtual_tokens", "0"});
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmopt
