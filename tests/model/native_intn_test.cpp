// Int-N and NF4 models in the native engine (infer/packed_layers.h, kernels/gemv_intn.h) against
// the torch engine running the same IntNLinear / NF4Linear layers, prefill and decode, 1 and 2
// threads; the native engine holds the layers as stored (no dense copy); a GPTQ-layout HF
// directory loads into the native engine packed.
//
// Tolerance (logit_tol): both engines compute the same function of the same stored codes in f32
// and differ only in summation order (native: per-group SIMD GEMV, tiles + BLAS; torch: its own
// int-N / NF4 kernels, torch matmuls). A dot product of length k ≤ 100 (plus ≤ 4 groups and a
// 10-level reduction) is within γ = 120·u of the exact value relative to Σ|w·x| (Higham §3.1,
// u = 2^-24); with N(0, 0.02) weights and RMS-normalized inputs Σ|w·x| ≤ kCancel = 10 times the
// result's scale. Each of the ≤ 2·5 + 1 sequential stages (q/k/v, attention, o, gate/up, down per
// layer, then the head) adds its own such error, so logits agree within
// kStages·γ·kCancel·max|logit| ≈ 8e-4·max|logit|. That the comparison can fail is checked: the
// int3 model's logits differ from the f32 model's by far more than the tolerance.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <vector>

#include "core/threads.h"
#include "infer/llama_cpu.h"
#include "io/checkpoint.h"
#include "model/intn_linear.h"
#include "model/loader.h"
#include "model/nf4_linear.h"
#include "model/save.h"
#include "model/synth.h"
#include "model/torch_engine.h"

namespace llmopt {
namespace {
namespace fs = std::filesystem;

constexpr double kGamma = 120.0 * 0x1p-24;
constexpr double kCancel = 10.0;
constexpr double kStages = 11.0;

ModelConfig config(int64_t ffn = 100) {
  ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = ffn;  // 100: down_proj rows of 3 groups of 32 and a tail of 4
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 80;
  c.tie_word_embeddings = false;
  return c;
}

struct Case {
  std::string name;
  std::string kind;  // intn | nf4
  model::IntNParams p;
  bool act_order = false;
  bool double_quant = false;
};

std::vector<Case> cases() {
  return {{"int4 g32 sym", "intn", {4, 32, true}},
          {"int4 g32 asym", "intn", {4, 32, false}},
          {"int4 g32 sym act-order", "intn", {4, 32, true}, true},
          {"int4 g32 asym act-order", "intn", {4, 32, false}, true},
          {"int8 per channel", "intn", {8, -1, true}},
          {"int3 g64 asym", "intn", {3, 64, false}},
          {"nf4", "nf4", {}, false, false},
          {"nf4 double quant", "nf4", {}, false, true}};
}

// Every projection (lm_head included) of a synth model replaced by the case's layer.
std::shared_ptr<model::LlamaModel> quantized_model(const Case& c, const ModelConfig& cfg, uint64_t seed) {
  auto m = model::synth_model(cfg, seed);
  for (auto& [path, l] : m->linear_layers()) {
    const torch::Tensor w = l->dense_weight();
    if (c.kind == "nf4") {
      m->set_linear(path, model::NF4Linear::quantize(w, l->bias(), c.double_quant));
      continue;
    }
    auto q = model::IntNLinear::quantize(w, l->bias(), c.p);
    if (c.act_order) {
      // GPTQ's desc_act: a permuted group of each column.
      kernels::IntNStorage s = q->storage();
      const int64_t gs = s.view().group_size(), groups = s.view().groups();
      s.g_idx.resize(static_cast<size_t>(s.cols));
      for (int64_t j = 0; j < s.cols; ++j) s.g_idx[j] = static_cast<int32_t>(((j * 7) % s.cols) / gs % groups);
      q = std::make_shared<model::IntNLinear>(std::move(s), l->bias());
    }
    m->set_linear(path, q);
  }
  return m;
}

double logit_tol(const std::vector<float>& ref) {
  float mx = 0.0f;
  for (float v : ref) mx = std::max(mx, std::fabs(v));
  return kStages * kGamma * kCancel * mx;
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0.0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(static_cast<double>(a[i]) - b[i]));
  return d;
}

const std::vector<int64_t> kIds = {1, 2, 3, 40, 79, 5, 6, 7, 8, 9, 10, 11, 12, 13};

// Prefill (all positions), then a 3-token prefill and two decodes on a fresh cache.
struct Logits {
  std::vector<float> prefill, decode;
};
Logits run(const infer::Engine& e, int64_t V) {
  Logits out;
  const int64_t T = static_cast<int64_t>(kIds.size());
  out.prefill.resize(static_cast<size_t>(T * V));
  auto c = e.make_cache(32);
  e.prefill(kIds.data(), T, *c, out.prefill.data(), true);
  auto c2 = e.make_cache(32);
  std::vector<float> l(static_cast<size_t>(V));
  e.prefill(kIds.data(), 3, *c2, l.data(), false);
  for (int64_t tok : {17, 42}) {
    e.decode(tok, *c2, l.data());
    out.decode.insert(out.decode.end(), l.begin(), l.end());
  }
  return out;
}

TEST(NativeIntN, NativeEngineMatchesTorchEngineAt1And2Threads) {
  const ModelConfig cfg = config();
  const int64_t V = cfg.vocab_size;
  const int saved = threads();
  for (const Case& c : cases()) {
    auto m = quantized_model(c, cfg, 31);
    ASSERT_TRUE(model::native_equivalent(*m)) << c.name;
    EXPECT_EQ(model::make_engine(m, "auto")->name(), "native") << c.name;
    auto native = model::make_engine(m, "native");
    auto torch_engine = model::make_engine(m, "torch");
    Logits decode_1thread;
    for (int nt : {1, 2}) {
      set_threads(nt);
      const Logits a = run(*native, V), b = run(*torch_engine, V);
      EXPECT_LE(max_diff(a.prefill, b.prefill), logit_tol(b.prefill)) << c.name << " prefill, threads " << nt;
      EXPECT_LE(max_diff(a.decode, b.decode), logit_tol(b.decode)) << c.name << " decode, threads " << nt;
      // Token-by-token decode from an empty cache: the same bits at any thread count.
      Logits d;
      auto cache = native->make_cache(8);
      std::vector<float> l(static_cast<size_t>(V));
      for (int64_t tok : {1, 2, 3, 40}) {
        native->decode(tok, *cache, l.data());
        d.decode.insert(d.decode.end(), l.begin(), l.end());
      }
      if (nt == 1) decode_1thread = d;
      else EXPECT_EQ(d.decode, decode_1thread.decode) << c.name << ": thread count changed decode";
    }
  }
  set_threads(saved);
}

TEST(NativeIntN, ComparisonDiscriminates) {
  // The int3 model's logits differ from the f32 model's by far more than the tolerance: the
  // engines' agreement above is about the packed layers, not a loose bound.
  const ModelConfig cfg = config();
  const Case int3 = cases()[5];
  ASSERT_EQ(int3.name, "int3 g64 asym");
  auto q = model::make_engine(quantized_model(int3, cfg, 31), "native");
  auto f = model::make_engine(model::synth_model(cfg, 31), "native");
  const Logits a = run(*q, cfg.vocab_size), b = run(*f, cfg.vocab_size);
  EXPECT_GT(max_diff(a.prefill, b.prefill), 10 * logit_tol(b.prefill));
}

TEST(NativeIntN, HeldAsStoredWithoutDenseCopy) {
  // Borrow (make_engine): the engine's own arena holds nothing (the f32 embedding and norms are
  // the model's tensors, the int-N / NF4 codes the layers' buffers); its weights are the packed
  // bytes. Copy: the same bytes in the engine's own buffers, bit-identical logits after the
  // model is gone.
  const ModelConfig cfg = config();
  for (const Case& c : {cases()[1], cases()[7]}) {
    auto m = quantized_model(c, cfg, 37);
    int64_t packed_bytes = 0, f32_proj_bytes = 0;
    for (auto& [path, l] : m->linear_layers()) {
      packed_bytes += l->storage_bytes();
      f32_proj_bytes += 4 * l->in_features() * l->out_features();
    }
    infer::CpuLlama borrow(model::model_to_checkpoint(*m, model::CheckpointWeights::Packed),
                           infer::CpuLlama::Storage::Borrow);
    EXPECT_EQ(borrow.arena_bytes(), 0) << c.name;
    // f32 as held: the embedding and the norms.
    const int64_t plain = 4 * (cfg.vocab_size * cfg.hidden_size + (2 * cfg.num_hidden_layers + 1) * cfg.hidden_size);
    EXPECT_LE(borrow.weight_bytes(), plain + packed_bytes) << c.name;
    EXPECT_LT(borrow.weight_bytes() - plain, f32_proj_bytes / 4) << c.name;
    auto copy = std::make_unique<infer::CpuLlama>(model::model_to_checkpoint(*m, model::CheckpointWeights::Packed));
    const Logits want = run(borrow, cfg.vocab_size);
    m.reset();
    const Logits got = run(*copy, cfg.vocab_size);
    EXPECT_EQ(got.prefill, want.prefill) << c.name;
    EXPECT_EQ(got.decode, want.decode) << c.name;
  }
}

TEST(NativeIntN, GptqDirectoryLoadsPacked) {
  // int4 g32 asym and act-order written in GPTQ's HF layout (io/gptq.h), read back by the native
  // engine: its projections are int-N as stored and it computes what the torch engine computes
  // on the in-memory model (lm_head is written dequantized by the GPTQ layout).
  const ModelConfig cfg = config(128);
  const int64_t V = cfg.vocab_size;
  for (const Case& c : {cases()[1], cases()[3]}) {
    auto m = quantized_model(c, cfg, 41);
    const fs::path dir = fs::temp_directory_path() / ("llmopt-native-gptq-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    model::save_model(*m, nullptr, "", model::ExportFormat::Hf, DType::F32, dir.string(),
                      model::CheckpointWeights::AsStored);
    const io::Checkpoint ck = io::load_checkpoint(dir.string());
    ASSERT_NE(ck.find("model.layers.0.self_attn.q_proj.qweight"), nullptr);
    infer::CpuLlama native(ck);
    int64_t packed = 0;
    for (const auto& l : native.weights().layers)
      for (const auto& mat : l.m) packed += mat.intn != nullptr;
    EXPECT_EQ(packed, 7 * cfg.num_hidden_layers) << c.name;
    auto torch_engine = model::make_engine(m, "torch");
    const Logits a = run(native, V), b = run(*torch_engine, V);
    EXPECT_LE(max_diff(a.prefill, b.prefill), logit_tol(b.prefill)) << c.name;
    EXPECT_LE(max_diff(a.decode, b.decode), logit_tol(b.decode)) << c.name;
    fs::remove_all(dir);
  }
}

}  // namespace
}  // namespace llmopt
