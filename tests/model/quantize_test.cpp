// Round-to-nearest quantization into packed layers: the packed product equals an ordinary matmul
// on the dequantized weights (decode and tiled prefill paths), fallbacks are declared and
// counted, bits per weight follow from the block layout, and a quantized model survives the state
// checkpoint and GGUF export with its blocks unchanged.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/gguf_checkpoint.h"
#include "kernels/quant_formats.h"
#include "model/loader.h"
#include "model/packed_linear.h"
#include "model/quantize.h"
#include "model/state_io.h"
#include "model/synth.h"
#include "model/torch_engine.h"
#include "infer/llama_cpu.h"

namespace llmopt {
namespace {
namespace fs = std::filesystem;

ModelConfig config() {
  ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 100;  // down_proj rows of 100 values: not whole 32-blocks -> fallback
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 80;
  c.tie_word_embeddings = false;
  return c;
}

TEST(PackedLinear, ProductEqualsMatmulOnDequantizedWeights) {
  torch::manual_seed(3);
  for (const char* name : {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "f16"}) {
    const DType t = *dtype_from_name(name);
    for (int64_t out : {1, 33, 172}) {
      const int64_t in = 96;
      auto w = torch::randn({out, in});
      auto b = torch::randn({out});
      auto p = model::PackedLinear::pack(w, b, t);
      const auto dq = p->dense_weight();
      // The stored values are ggml's: dequantize(quantize_ref(w)) computed directly.
      std::vector<uint8_t> blocks(static_cast<size_t>(dtype_bytes_for(t, out * in)));
      if (t == DType::F16) {
        auto h = w.to(torch::kFloat16).contiguous();
        std::memcpy(blocks.data(), h.data_ptr(), blocks.size());
      } else {
        kernels::quantize_row_ref(t, w.data_ptr<float>(), blocks.data(), out * in);
      }
      EXPECT_EQ(std::memcmp(blocks.data(), p->blocks().data(), blocks.size()), 0) << name;
      for (int64_t m : {1, 3, 8, 9, 40}) {
        auto x = torch::randn({m, in});
        auto want = torch::matmul(x.to(torch::kFloat64), dq.to(torch::kFloat64).t()) + b.to(torch::kFloat64);
        auto got = p->forward(x).to(torch::kFloat64);
        // f32 accumulation over `in` terms: |err| <= in * eps32 * sum|x||w| (+ the bias add).
        auto bound = (x.abs().to(torch::kFloat64).matmul(dq.abs().to(torch::kFloat64).t()) + b.abs()) * (in * 1.2e-7) + 1e-6;
        EXPECT_TRUE(((got - want).abs() <= bound).all().item<bool>()) << name << " out " << out << " m " << m;
      }
    }
  }
}

TEST(Quantize, RtnDeclaresFallbacksAndCountsBits) {
  auto m = model::synth_model(config(), 5);
  model::QuantizeSpec spec;
  spec.format = "q8_0";
  const auto rep = model::quantize_rtn(*m, spec);
  EXPECT_EQ(rep.skipped, 1);   // lm_head
  EXPECT_EQ(rep.fallback, 2);  // the two down_proj
  EXPECT_EQ(rep.quantized, 12);
  ASSERT_EQ(rep.fallback_layers.size(), 2u);
  EXPECT_EQ(rep.fallback_layers[0], "model.layers.0.mlp.down_proj");
  // Bits: q8_0 = 34 bytes / 32 weights = 8.5; f16 fallback 16; lm_head f32 32.
  const double q = 2 * (64 * 64 + 32 * 64 * 2 + 64 * 64 + 2 * 100 * 64), f = 2 * 64 * 100, s = 80 * 64;
  EXPECT_NEAR(rep.linear_bits_per_weight, (q * 8.5 + f * 16 + s * 32) / (q + f + s), 1e-9);
  for (auto& [path, l] : m->linear_layers())
    EXPECT_EQ(l->kind(), path == "lm_head" ? "dense" : "packed") << path;

  spec.fallback = "error";
  auto m2 = model::synth_model(config(), 5);
  try {
    model::quantize_rtn(*m2, spec);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("down_proj"), std::string::npos) << e.what();
  }
  spec.format = "i32";  // a dtype that is no storage format: named, not silently replaced
  EXPECT_THROW(model::check_quantize_spec(spec), InputError);
  spec.format = "q8_0";
  spec.skip = {"("};
  EXPECT_THROW(model::check_quantize_spec(spec), InputError);
}

TEST(Quantize, QuantizedModelKeepsItsBlocksThroughStateAndGguf) {
  auto m = model::synth_model(config(), 9);
  model::QuantizeSpec spec;
  spec.format = "q4_0";
  model::quantize_rtn(*m, spec);
  const fs::path dir = fs::temp_directory_path() / ("llmopt-quant-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  model::save_model_state(*m, (dir / "s").string());
  auto back = model::load_model_state((dir / "s").string());
  torch::NoGradGuard ng;
  auto ids = torch::tensor({{1, 2, 3, 40, 79, 5, 6, 7, 8, 9, 10}}, torch::kLong);
  EXPECT_TRUE(torch::equal(m->forward(ids), back->forward(ids)));
  io::write_gguf((dir / "m.gguf").string(), model::model_to_checkpoint(*back, model::CheckpointWeights::AsStored), DType::F32);
  const io::Checkpoint g = io::load_checkpoint((dir / "m.gguf").string());
  std::map<std::string, std::shared_ptr<model::LinearLayer>> ls;
  for (auto& [n, l] : m->linear_layers()) ls[n] = l;
  for (const char* p : {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.k_proj", "model.layers.1.mlp.up_proj"}) {
    const auto& packed = static_cast<const model::PackedLinear&>(*ls.at(p));
    const io::TensorView& t = g.get(std::string(p) + ".weight");
    EXPECT_EQ(t.dtype, DType::Q4_0) << p;
    ASSERT_EQ(t.nbytes, static_cast<int64_t>(packed.blocks().size()));
    EXPECT_EQ(std::memcmp(t.data, packed.blocks().data(), packed.blocks().size()), 0) << p;
  }
  EXPECT_EQ(g.get("model.layers.0.mlp.down_proj.weight").dtype, DType::F16);  // the fallback
  // general.file_type names the projections' type as llama-quantize does: 2 = MOSTLY_Q4_0 (the
  // f32 lm_head, embedding and f16 fallbacks notwithstanding).
  EXPECT_EQ(g.metadata["gguf_kv"]["general.file_type"].get<int64_t>(), 2);
  // Loaded back (dequantized) the GGUF computes what the packed model computes.
  auto lg = model::model_from_checkpoint(g);
  EXPECT_LT((lg->forward(ids) - m->forward(ids)).abs().max().item<float>(), 1e-4f);
  fs::remove_all(dir);
}


TEST(Quantize, BothEnginesRunThePackedModelAndAgree) {
  // The native engine holds the packed blocks (no f32 copy) and must compute what the torch
  // engine's PackedLinear computes: both are matmuls on the same dequantized values, so they agree
  // to float32 reassociation (logits of magnitude ~1: 1e-4).
  for (const char* fmt : {"q8_0", "q4_0", "q5_1"}) {
    auto m = model::synth_model(config(), 13);
    model::QuantizeSpec spec;
    spec.format = fmt;
    model::quantize_rtn(*m, spec);
    auto native = model::make_engine(m, "native");
    auto torch_engine = model::make_engine(m, "torch");
    EXPECT_EQ(native->name(), "native");
    EXPECT_EQ(model::make_engine(m, "auto")->name(), "native");
    // Packed bytes, not f32: smaller than the f32 model's weights.
    auto dense = model::synth_model(config(), 13);
    EXPECT_LT(native->weight_bytes(), model::make_engine(dense, "native")->weight_bytes() * 6 / 10) << fmt;
    const std::vector<int64_t> ids = {1, 2, 3, 40, 79, 5, 6, 7, 8, 9, 10, 11, 12, 13};
    const int64_t V = config().vocab_size, T = static_cast<int64_t>(ids.size());
    std::vector<float> a(static_cast<size_t>(T * V)), b(a.size());
    auto ca = native->make_cache(32), cb = torch_engine->make_cache(32);
    native->prefill(ids.data(), T, *ca, a.data(), true);
    torch_engine->prefill(ids.data(), T, *cb, b.data(), true);
    float diff = 0;
    for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::abs(a[i] - b[i]));
    EXPECT_LT(diff, 1e-4f) << fmt << " prefill";
    // Short prefill (the packed GEMV path) and decode continue from the cache.
    std::vector<float> da(static_cast<size_t>(V)), db(da.size());
    native->prefill(ids.data(), 3, *ca, da.data(), false);
    torch_engine->prefill(ids.data(), 3, *cb, db.data(), false);
    native->decode(17, *ca, da.data());
    torch_engine->decode(17, *cb, db.data());
    diff = 0;
    for (size_t i = 0; i < da.size(); ++i) diff = std::max(diff, std::abs(da[i] - db[i]));
    EXPECT_LT(diff, 1e-4f) << fmt << " decode";
  }
}

TEST(Quantize, GgufBlocksLoadPacked) {
  auto m = model::synth_model(config(), 9);
  model::QuantizeSpec spec;
  spec.format = "q8_0";
  model::quantize_rtn(*m, spec);
  const fs::path dir = fs::temp_directory_path() / ("llmopt-quant-load-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  io::write_gguf((dir / "m.gguf").string(), model::model_to_checkpoint(*m, model::CheckpointWeights::AsStored), DType::F32);
  auto back = model::model_from_checkpoint(io::load_checkpoint((dir / "m.gguf").string()));
  std::map<std::string, std::string> kinds;
  for (auto& [n, l] : back->linear_layers()) kinds[n] = l->kind();
  EXPECT_EQ(kinds.at("model.layers.0.self_attn.q_proj"), "packed");
  EXPECT_EQ(kinds.at("model.layers.0.mlp.down_proj"), "dense");  // the f16 fallback becomes f32
  EXPECT_EQ(kinds.at("lm_head"), "dense");
  torch::NoGradGuard ng;
  auto ids = torch::tensor({{1, 2, 3, 40, 79, 5}}, torch::kLong);
  EXPECT_LT((back->forward(ids) - m->forward(ids)).abs().max().item<float>(), 1e-4f);
  fs::remove_all(dir);
}


TEST(NativeEngine, BorrowUsesTheFileInPlaceAndComputesTheSame) {
  // A checkpoint read from disk (memory-mapped safetensors, GGUF with packed blocks): Borrow reads
  // the tensors already in the engine's types where they lie, Copy makes its own arena; the
  // logits are bit-identical and the borrowing engine's own arena holds none of those tensors.
  auto m = model::synth_model(config(), 23);
  model::QuantizeSpec spec;
  spec.format = "q4_0";
  model::quantize_rtn(*m, spec);
  const fs::path dir = fs::temp_directory_path() / ("llmopt-borrow-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  io::write_gguf((dir / "m.gguf").string(), model::model_to_checkpoint(*m, model::CheckpointWeights::AsStored), DType::F32);
  infer::CpuLlama copy(io::load_checkpoint((dir / "m.gguf").string()));
  infer::CpuLlama borrow(io::load_checkpoint((dir / "m.gguf").string()), infer::CpuLlama::Storage::Borrow);
  EXPECT_EQ(copy.weight_bytes(), borrow.weight_bytes());
  EXPECT_GE(copy.arena_bytes(), copy.weight_bytes());
  // Everything is already f32 (norms, embedding, lm_head) or packed (q4_0, the f16 fallback).
  EXPECT_EQ(borrow.arena_bytes(), 0);
  const std::vector<int64_t> ids = {1, 2, 3, 40, 79, 5, 6, 7, 8, 9, 10, 11, 12, 13};
  const int64_t V = config().vocab_size, T = static_cast<int64_t>(ids.size());
  std::vector<float> a(static_cast<size_t>(T * V)), b(a.size());
  auto ca = copy.make_cache(32), cb = borrow.make_cache(32);
  copy.prefill(ids.data(), T, *ca, a.data(), true);
  borrow.prefill(ids.data(), T, *cb, b.data(), true);
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmopt
