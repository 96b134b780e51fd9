// Checkpoint writers and loaders on small random models: HF, GGUF and llama2.c round trips,
// the q/k RoPE permutation, config.json parsing and writing, finite checks.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/half.h"
#include "io/gguf.h"
#include "io/gguf_checkpoint.h"
#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "io/llama2c.h"
#include "io/safetensors.h"
#include "io_test_util.h"

namespace llmopt::io {
namespace {
using testing::random_checkpoint;
using testing::TempDir;
using testing::tiny_config;

void expect_same_values(const Checkpoint& a, const Checkpoint& b, float tolerance) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& ta : a.tensors) {
    const TensorView* tb = b.find(ta.name);
    ASSERT_NE(tb, nullptr) << ta.name;
    ASSERT_EQ(ta.shape, tb->shape) << ta.name;
    const auto x = tensor_to_f32(ta), y = tensor_to_f32(*tb);
    for (size_t k = 0; k < x.size(); ++k)
      ASSERT_NEAR(x[k], y[k], tolerance) << ta.name << "[" << k << "]";
  }
}

// convert_hf_to_gguf.py's permute written out for one head of 4 rows: reshape (1, 2, 2, in),
// swap axes 1 and 2: HF rows [a, b, c, d] -> GGUF rows [a, c, b, d].
TEST(RopePermutationTest, MatchesLlamaCppPermuteOnOneHead) {
  const uint8_t hf[4] = {'a', 'b', 'c', 'd'};
  uint8_t gguf[4], back[4];
  permute_rope_rows(hf, gguf, 4, 1, 1, false);
  EXPECT_EQ(std::string(gguf, gguf + 4), "acbd");
  permute_rope_rows(gguf, back, 4, 1, 1, true);
  EXPECT_EQ(std::string(back, back + 4), "abcd");
}

TEST(RopePermutationTest, PermutesWithinEachHeadOnly) {
  // 2 heads of 6 rows, 2 bytes per row.
  std::vector<uint8_t> hf(24), gguf(24), back(24);
  for (int k = 0; k < 24; ++k) hf[k] = static_cast<uint8_t>(k);
  permute_rope_rows(hf.data(), gguf.data(), 12, 2, 2, false);
  // Head 1 starts at row 6; GGUF row 6 + 2i + s = HF row 6 + 3s + i.
  const int expected_rows[12] = {0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11};
  for (int r = 0; r < 12; ++r) {
    EXPECT_EQ(gguf[2 * r], hf[2 * expected_rows[r]]) << r;
    EXPECT_EQ(gguf[2 * r + 1], hf[2 * expected_rows[r] + 1]) << r;
  }
  permute_rope_rows(gguf.data(), back.data(), 12, 2, 2, true);
  EXPECT_EQ(back, hf);
}

TEST(CheckpointRoundTripTest, HfF32IsExact) {
  TempDir dir("rt_hf");
  auto ck = random_checkpoint(tiny_config());
  write_hf(ck, dir.path().string(), DType::F32);
  const auto back = load_checkpoint(dir.path().string());
  expect_same_values(ck, back, 0.0f);
  EXPECT_EQ(back.config.num_key_value_heads, 2);
  EXPECT_EQ(back.tokenizer.kind, TokenizerSource::Kind::None);
}

TEST(CheckpointRoundTripTest, HfBf16WithinHalfUlp) {
  TempDir dir("rt_hf16");
  auto cfg = tiny_config();
  cfg.tie_word_embeddings = false;
  auto ck = random_checkpoint(cfg);
  write_hf(ck, dir.path().string(), DType::BF16);
  const auto back = load_checkpoint(dir.path().string());
  EXPECT_EQ(back.get("lm_head.weight").dtype, DType::BF16);
  // bf16 keeps 8 significant bits: relative error <= 2^-9; values are in (-1, 1).
  expect_same_values(ck, back, 1.0f / 512);
}

TEST(CheckpointRoundTripTest, GgufF32IsExactAndKeepsConfig) {
  TempDir dir("rt_gguf");
  auto cfg = tiny_config();
  cfg.tie_word_embeddings = false;
  cfg.rope_theta = 500000.0;
  auto ck = random_checkpoint(cfg);
  write_gguf(dir.file("m.gguf"), ck, DType::F32,
             {{"tokenizer.ggml.model", GgufValue::make_string("llama")}});
  const auto back = load_checkpoint(dir.file("m.gguf"));
  expect_same_values(ck, back, 0.0f);
  EXPECT_EQ(back.config.rope_theta, 500000.0);
  EXPECT_EQ(back.config.num_key_value_heads, 2);
  EXPECT_EQ(back.config.max_position_embeddings, 128);
  EXPECT_FALSE(back.config.tie_word_embeddings);
  const auto g = GgufFile::open(dir.file("m.gguf"));
  EXPECT_EQ(g.get_u32("general.file_type"), 0u);
  EXPECT_EQ(g.get_string("tokenizer.ggml.model"), "llama");
  // The q rows in the file are in GGUF's interleaved order.
  const auto* q = g.find_tensor("blk.0.attn_q.weight");
  const TensorView& hf_q = ck.get("model.layers.0.self_attn.q_proj.weight");
  const int64_t row_bytes = 4 * 64;
  EXPECT_EQ(std::memcmp(q->data + 1 * row_bytes, hf_q.data + 8 * row_bytes, row_bytes),
            0);  // head_dim 16
}

// f32 hyper-parameters are read back through their decimal form; a subnormal must not make that
// conversion throw (std::stod would raise out_of_range).
TEST(CheckpointRoundTripTest, GgufSubnormalEpsilonLoads) {
  TempDir dir("rt_eps");
  auto cfg = tiny_config();
  cfg.rms_norm_eps = 1e-45;
  write_gguf(dir.file("m.gguf"), random_checkpoint(cfg), DType::F32);
  // f32(1e-45) is the subnormal 1.4e-45 whose shortest decimal form is "1e-45".
  EXPECT_EQ(load_checkpoint(dir.file("m.gguf")).config.rms_norm_eps, 1e-45);
}

TEST(CheckpointRoundTripTest, GgufF16KeepsNormsF32) {
  TempDir dir("rt_gguf16");
  auto ck = random_checkpoint(tiny_config());
  write_gguf(dir.file("m.gguf"), ck, DType::F16);
  const auto g = GgufFile::open(dir.file("m.gguf"));
  EXPECT_EQ(g.get_u32("general.file_type"), 1u);
  EXPECT_EQ(*g.find_tensor("blk.0.attn_norm.weight")->dtype, DType::F32);
  EXPECT_EQ(*g.find_tensor("blk.0.ffn_up.weight")->dtype, DType::F16);
  EXPECT_EQ(g.find_tensor("output.weight"), nullptr);  // tied
  // f16 has 11 significant bits: error <= 2^-12 for |x| < 1.
  expect_same_values(ck, load_checkpoint(dir.file("m.gguf")), 1.0f / 4096);
}

TEST(CheckpointRoundTripTest, GgufQ8_0WithinHalfStepAndFallbackForPartialBlocks) {
  TempDir dir("rt_gguf_q8");
  auto cfg = tiny_config();
  cfg.intermediate_size = 80;  // ffn_down rows of 80 are not whole 32-blocks -> F16 fallback
  auto ck = random_checkpoint(cfg);
  write_gguf(dir.file("m.gguf"), ck, DType::Q8_0);
  const auto g = GgufFile::open(dir.file("m.gguf"));
  EXPECT_EQ(g.get_u32("general.file_type"), 7u);
  EXPECT_EQ(g.get_u32("general.quantization_version"), 2u);
  EXPECT_EQ(*g.find_tensor("blk.0.attn_q.weight")->dtype, DType::Q8_0);
  EXPECT_EQ(*g.find_tensor("blk.0.ffn_down.weight")->dtype, DType::F16);
  // Q8_0: |error| <= d/2 with d = amax/127 < 1/127, plus d's own f16 rounding (2^-11 relative)
  // times |q| <= 127: 1/254 + 1/2048 for values in (-1, 1).
  const auto back = load_checkpoint(dir.file("m.gguf"));
  expect_same_values(ck, back, 1.0f / 254 + 1.0f / 2048);
  // Writing the loaded Q8_0 checkpoint again copies blocks unchanged.
  write_gguf(dir.file("m2.gguf"), back, DType::Q8_0);
  const auto g2 = GgufFile::open(dir.file("m2.gguf"));
  for (const auto& t : g.tensors()) {
    const auto* t2 = g2.find_tensor(t.name);
    ASSERT_NE(t2, nullptr);
    ASSERT_EQ(t.nbytes, t2->nbytes);
    EXPECT_EQ(std::memcmp(t.data, t2->data, t.nbytes), 0) << t.name;
  }
}

TEST(CheckpointRoundTripTest, GgufLlama3RopeFactors) {
  TempDir dir("rt_rope");
  auto cfg = tiny_config();
  cfg.rope_theta = 500000.0;
  cfg.rope_scaling.type = "llama3";
  cfg.rope_scaling.factor = 8;
  cfg.rope_scaling.original_max_position_embeddings = 64;
  write_gguf(dir.file("m.gguf"), random_checkpoint(cfg), DType::F32);
  const auto g = GgufFile::open(dir.file("m.gguf"));
  const auto* f = g.find_tensor("rope_freqs.weight");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->shape, (std::vector<int64_t>{8}));
  float first, last;
  std::memcpy(&first, f->data, 4);
  std::memcpy(&last, f->data + 28, 4);
  EXPECT_EQ(first, 1.0f);  // highest frequency (wavelength 2 pi) is never scaled
  EXPECT_EQ(last, 8.0f);   // lowest frequency: wavelength 2 pi * 500000^(14/16) > 64 tokens
}

TEST(CheckpointRoundTripTest, Llama2cLegacyV1V2) {
  TempDir dir("rt_l2c");
  auto cfg = tiny_config();
  cfg.num_attention_heads = 4;
  cfg.head_dim = 16;
  auto ck = random_checkpoint(cfg);
  write_llama2c_legacy(dir.file("l.bin"), ck);
  write_llama2c_v1(dir.file("v1.bin"), ck);
  write_llama2c_v2(dir.file("v2.bin"), ck, 64);
  testing::write_text(dir.file("tok.bin"), "x");
  LoadOptions o;
  o.tokenizer_path = dir.file("tok.bin");
  expect_same_values(ck, load_checkpoint(dir.file("l.bin"), o), 0.0f);
  expect_same_values(ck, load_checkpoint(dir.file("v1.bin"), o), 0.0f);
  const auto v2 = load_checkpoint(dir.file("v2.bin"), o);
  EXPECT_EQ(v2.metadata["group_size"], 64);
  // Half a step of the largest possible scale (max|w| < 1): 1 / 254.
  expect_same_values(ck, v2, 1.0f / 254);
  EXPECT_EQ(v2.tokenizer.kind, TokenizerSource::Kind::Llama2cBin);
}

TEST(CheckpointRoundTripTest, Llama2cUnsharedClassifierUsesNegativeVocab) {
  TempDir dir("rt_l2c_cls");
  auto cfg = tiny_config();
  cfg.tie_word_embeddings = false;
  auto ck = random_checkpoint(cfg);
  write_llama2c_legacy(dir.file("l.bin"), ck);
  const auto f = MappedFile::open(dir.file("l.bin"));
  int32_t vocab;
  std::memcpy(&vocab, f->data() + 20, 4);
  EXPECT_EQ(vocab, -64);
  const auto back = llama2c_to_checkpoint(f);
  EXPECT_FALSE(back.config.tie_word_embeddings);
  expect_same_values(ck, back, 0.0f);
}

// A sharded HF checkpoint: two safetensors files and model.safetensors.index.json, as
// transformers' save_pretrained writes them for large models.
TEST(CheckpointRoundTripTest, HfShardedIndex) {
  TempDir dir("rt_sharded");
  auto ck = random_checkpoint(tiny_config());
  write_hf(ck, dir.path().string(), DType::F32);
  std::filesystem::remove(dir.path() / "model.safetensors");
  std::vector<SafetensorsOutTensor> shard[2];
  nlohmann::json index = {{"metadata", {{"total_size", ck.total_bytes()}}},
                          {"weight_map", nlohmann::json::object()}};
  for (size_t k = 0; k < ck.tensors.size(); ++k) {
    const auto& t = ck.tensors[k];
    shard[k % 2].push_back({t.name, t.dtype, t.shape, t.data, t.nbytes});
    index["weight_map"][t.name] =
        k % 2 ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
  }
  write_safetensors(dir.file("model-00001-of-00002.safetensors"), shard[0]);
  write_safetensors(dir.file("model-00002-of-00002.safetensors"), shard[1]);
  testing::write_text(dir.file("model.safetensors.index.json"), index.dump());
  const auto back = load_checkpoint(dir.path().string());
  expect_same_values(ck, back, 0.0f);
  EXPECT_EQ(back.metadata["files"].size(), 2u);
}

TEST(HfConfigTest, DefaultsAndRopeScaling) {
  const auto j = nlohmann::json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "hidden_size": 128, "intermediate_size": 256,
    "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 1000,
    "eos_token_id": [128001, 128009],
    "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})");
  const auto c = parse_hf_config(j, "config.json");
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.eos_token_id, 128001);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_EQ(c.rope_scaling.factor, 32.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.rms_norm_eps, 1e-6);  // transformers' LlamaConfig default
}

TEST(HfConfigTest, Qwen2HasAttentionBiasAndMistralSlidingWindow) {
  auto base =
      nlohmann::json::parse(R"({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 10, "sliding_window": 4096,
    "rope_type": null, "rope_scaling": {"type": "default"}})");
  base["architectures"] = {"Qwen2ForCausalLM"};
  const auto q = parse_hf_config(base, "config.json");
  EXPECT_TRUE(q.attention_bias);
  EXPECT_EQ(q.sliding_window, 0);  // use_sliding_window defaults to false
  base["architectures"] = {"MistralForCausalLM"};
  const auto m = parse_hf_config(base, "config.json");
  EXPECT_FALSE(m.attention_bias);
  EXPECT_EQ(m.sliding_window, 4096);
}

TEST(HfConfigTest, WriterOutputParsesBackToSameConfig) {
  auto c = tiny_config();
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = 8;
  c.bos_token_id = 5;
  const auto j = hf_config_json(c, DType::BF16);
  EXPECT_EQ(j["torch_dtype"], "bfloat16");
  EXPECT_EQ(j["model_type"], "llama");
  const auto back = parse_hf_config(nlohmann::json::parse(j.dump()), "config.json");
  EXPECT_EQ(back.hidden_size, c.hidden_size);
  EXPECT_EQ(back.head_dim, c.head_dim);
  EXPECT_EQ(back.rms_norm_eps, c.rms_norm_eps);
  EXPECT_EQ(back.rope_scaling.factor, 8);
  EXPECT_EQ(back.bos_token_id, 5);
  EXPECT_EQ(back.tie_word_embeddings, c.tie_word_embeddings);
}

TEST(GgufNamesTest, MapBothWays) {
  EXPECT_EQ(gguf_to_hf_name("blk.12.ffn_down.weight"), "model.layers.12.mlp.down_proj.weight");
  EXPECT_EQ(gguf_to_hf_name("output.weight"), "lm_head.weight");
  EXPECT_EQ(gguf_to_hf_name("blk.x.attn_q.weight"), "");
  EXPECT_EQ(gguf_to_hf_name("rope_freqs.weight"), "");
  EXPECT_EQ(hf_to_gguf_name("model.layers.3.self_attn.k_proj.bias"), "blk.3.attn_k.bias");
  EXPECT_EQ(hf_to_gguf_name("model.embed_tokens.weight"), "token_embd.weight");
}

TEST(FiniteCheckTest, ReportsTensorAndIndexForF32AndBf16) {
  auto ck = random_checkpoint(tiny_config());
  ck.path = "m";
  auto& t = ck.tensors[3];
  float nan = std::nanf("");
  std::memcpy(const_cast<uint8_t*>(t.data) + 4 * 17, &nan, 4);
  try {
    check_tensors_finite(ck);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("'" + t.name + "'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("element 17"), std::string::npos) << e.what();
  }
  uint16_t h[3] = {f32_to_bf16(1.0f), f32_to_bf16(INFINITY), 0};
  Checkpoint c2;
  c2.path = "b";
  c2.tensors.push_back({"x", DType::BF16, {3}, reinterpret_cast<const uint8_t*>(h), 6});
  EXPECT_THROW(check_tensors_finite(c2), InputError);
}

}  // namespace
}  // namespace llmopt::io
