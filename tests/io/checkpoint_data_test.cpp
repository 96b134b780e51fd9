// Loaders and writers on the real files of ../shared (DATA.md).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/checkpoint_tensors.h"
#include "io/gguf.h"
#include "io/gguf_checkpoint.h"
#include "io/hf_checkpoint.h"
#include "io/llama2c.h"
#include "io/safetensors.h"
#include "io/sha256.h"

namespace llmopt::io {
namespace {
namespace fs = std::filesystem;

const std::string kStories = std::string(LLMOPT_SHARED_DIR) + "/models/stories260K/";
const std::string kTinyLlama = std::string(LLMOPT_SHARED_DIR) + "/models/tinyllama-bpe-17m";

LoadOptions with_tokenizer() {
  LoadOptions o;
  o.tokenizer_path = kStories + "tok512.bin";
  return o;
}

fs::path temp_dir(const std::string& name) {
  const auto d =
      fs::temp_directory_path() / ("llmopt_io_data_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Same names, shapes, dtypes and bytes.
void expect_identical(const Checkpoint& a, const Checkpoint& b) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& ta : a.tensors) {
    const TensorView* tb = b.find(ta.name);
    ASSERT_NE(tb, nullptr) << ta.name;
    EXPECT_EQ(ta.shape, tb->shape) << ta.name;
    ASSERT_EQ(ta.dtype, tb->dtype) << ta.name;
    ASSERT_EQ(ta.nbytes, tb->nbytes) << ta.name;
    EXPECT_EQ(std::memcmp(ta.data, tb->data, static_cast<size_t>(ta.nbytes)), 0) << ta.name;
  }
}

TEST(CheckpointDataTest, Stories260KLegacyConfig) {
  const auto ck = load_checkpoint(kStories + "stories260K.bin", with_tokenizer());
  EXPECT_EQ(ck.format, ModelFormat::Llama2c);
  // DATA.md: dim=64 hidden=172 layers=5 heads=8 kv_heads=4 vocab=512 seq=512, shared classifier.
  EXPECT_EQ(ck.config.hidden_size, 64);
  EXPECT_EQ(ck.config.intermediate_size, 172);
  EXPECT_EQ(ck.config.num_hidden_layers, 5);
  EXPECT_EQ(ck.config.num_attention_heads, 8);
  EXPECT_EQ(ck.config.num_key_value_heads, 4);
  EXPECT_EQ(ck.config.vocab_size, 512);
  EXPECT_EQ(ck.config.max_position_embeddings, 512);
  EXPECT_TRUE(ck.config.tie_word_embeddings);
  EXPECT_EQ(ck.find("lm_head.weight"), nullptr);
  EXPECT_EQ(ck.tokenizer.kind, TokenizerSource::Kind::Llama2cBin);
  // 9 tensors per layer + embedding + final norm.
  EXPECT_EQ(ck.tensors.size(), 5u * 9 + 2);
  // (1056540 - 28) / 4 floats in the file, minus the two 512 x 4 freq_cis tables.
  EXPECT_EQ(ck.total_params(), 264128 - 4096);
}

TEST(CheckpointDataTest, Llama2cNeedsTokenizer) {
  EXPECT_THROW(load_checkpoint(kStories + "stories260K.bin"), InputError);
}

TEST(CheckpointDataTest, LegacyAndV1GiveIdenticalTensors) {
  const auto legacy = load_checkpoint(kStories + "stories260K.bin", with_tokenizer());
  const auto v1 = load_checkpoint(kStories + "stories260K_v1_ak42_clebert.bin", with_tokenizer());
  EXPECT_EQ(v1.metadata["llama2c_version"], 1);
  expect_identical(legacy, v1);
}

TEST(CheckpointDataTest, V2ExportReproducesReferenceByteForByte) {
  const auto legacy = load_checkpoint(kStories + "stories260K.bin", with_tokenizer());
  const auto dir = temp_dir("v2");
  const std::string out = (dir / "q80.bin").string();
  write_llama2c_v2(out, legacy, 32);  // DATA.md: the reference uses groups of 32
  EXPECT_EQ(sha256_file_hex(out), sha256_file_hex(kStories + "stories260K_q80_v2.bin"));
  fs::remove_all(dir);
}

// Dequantized v2 weights are within half a quantization step (scale / 2 = max|w| / 254 per group)
// of the fp32 weights.
TEST(CheckpointDataTest, V2DequantizesWithinHalfAStep) {
  const auto legacy = load_checkpoint(kStories + "stories260K.bin", with_tokenizer());
  const auto v2 = load_checkpoint(kStories + "stories260K_q80_v2.bin", with_tokenizer());
  EXPECT_EQ(v2.metadata["group_size"], 32);
  for (const auto& t : legacy.tensors) {
    const auto a = tensor_to_f32(t);
    const auto b = tensor_to_f32(v2.get(t.name));
    ASSERT_EQ(a.size(), b.size());
    if (t.shape.size() == 1) {  // norms are stored in fp32
      EXPECT_EQ(a, b) << t.name;
      continue;
    }
    // Each element is off by at most half a step of its group, scale/2 = max|w_group| / 254,
    // which the tensor-wide max|w| / 254 bounds (1e-4 relative slack for f32 rounding).
    float wmax = 0;
    for (float x : a) wmax = std::max(wmax, std::fabs(x));
    const float tolerance = wmax / 254.0f * 1.0001f;
    for (size_t k = 0; k < a.size(); ++k)
      ASSERT_LE(std::fabs(a[k] - b[k]), tolerance) << t.name << " " << k;
  }
}

TEST(CheckpointDataTest, LlamaCppGgufMatchesLlama2cBinAfterUnpermuting) {
  // llama.cpp's llama2c converter copies the interleaved rows as they are; both loaders
  // un-permute, so identical tensors confirm that GGUF and llama2.c share the layout and that
  // the GGUF name map and dims reversal are right.
  const auto legacy = load_checkpoint(kStories + "stories260K.bin", with_tokenizer());
  const auto gguf = load_checkpoint(kStories + "stories260K.llamacpp-f32.gguf");
  EXPECT_EQ(gguf.format, ModelFormat::Gguf);
  EXPECT_EQ(gguf.tokenizer.kind, TokenizerSource::Kind::Gguf);
  EXPECT_EQ(gguf.config.hidden_size, 64);
  EXPECT_EQ(gguf.config.num_key_value_heads, 4);
  EXPECT_EQ(gguf.config.vocab_size, 512);
  EXPECT_EQ(gguf.config.rms_norm_eps, 1e-5);  // f32 in the file, read back as its decimal
  for (const auto& t : legacy.tensors) {
    const TensorView* g = gguf.find(t.name);
    ASSERT_NE(g, nullptr) << t.name;
    EXPECT_EQ(g->shape, t.shape) << t.name;
    ASSERT_EQ(g->nbytes, t.nbytes) << t.name;
    EXPECT_EQ(std::memcmp(g->data, t.data, t.nbytes), 0) << t.name;
  }
  EXPECT_TRUE(gguf.metadata["gguf_kv"].contains("general.architecture"));
  EXPECT_EQ(gguf.metadata["gguf_kv"]["tokenizer.ggml.tokens"], "[512 x string]");
}

TEST(CheckpointDataTest, QuantizedGgufPassesBlocksThrough) {
  const auto q = load_checkpoint(kStories + "stories260K.llamacpp-Q4_K_M.gguf");
  bool saw_block = false;
  for (const auto& t : q.tensors) saw_block |= dtype_is_block_quantized(t.dtype);
  EXPECT_TRUE(saw_block);
  EXPECT_EQ(q.config.num_hidden_layers, 5);
}

TEST(CheckpointDataTest, TinyLlamaHfDirectory) {
  const auto ck = load_checkpoint(kTinyLlama);
  EXPECT_EQ(ck.format, ModelFormat::HfDir);
  EXPECT_EQ(ck.config.hidden_size, 256);
  EXPECT_EQ(ck.config.num_hidden_layers, 6);
  EXPECT_EQ(ck.config.num_key_value_heads, 4);
  EXPECT_EQ(ck.config.vocab_size, 50257);
  EXPECT_EQ(ck.config.bos_token_id, 50256);
  EXPECT_TRUE(ck.config.tie_word_embeddings);
  EXPECT_EQ(ck.tokenizer.kind, TokenizerSource::Kind::HfJson);
  EXPECT_EQ(ck.get("model.embed_tokens.weight").dtype, DType::BF16);
  // The reference writer pads the header to a multiple of 8 bytes, as ours does.
  EXPECT_EQ(SafetensorsFile::open(kTinyLlama + "/model.safetensors").header_size() % 8, 0u);
  // MODEL_CARD.md: 17.3 M parameters.
  EXPECT_NEAR(static_cast<double>(ck.total_params()), 17.3e6, 0.05e6);
}

TEST(CheckpointDataTest, SafetensorsFileStandsForItsDirectory) {
  const auto ck = load_checkpoint(kTinyLlama + "/model.safetensors");
  EXPECT_EQ(ck.format, ModelFormat::HfDir);
  EXPECT_EQ(ck.config.vocab_size, 50257);
  EXPECT_EQ(ck.tokenizer.kind, TokenizerSource::Kind::HfJson);
}

TEST(CheckpointDataTest, HfRoundTripThroughWriter) {
  const auto ck = load_checkpoint(kTinyLlama);
  const auto dir = temp_dir("hf");
  write_hf(ck, dir.string(), DType::BF16);
  const auto back = load_checkpoint(dir.string());
  expect_identical(ck, back);
  EXPECT_EQ(back.config.head_dim, ck.config.head_dim);
  EXPECT_EQ(back.config.rms_norm_eps, ck.config.rms_norm_eps);
  fs::remove_all(dir);
}

TEST(CheckpointDataTest, GgufRoundTripOfStories) {
  const auto legacy = load_checkpoint(kStories + "stories260K.bin", with_tokenizer());
  const auto src = GgufFile::open(kStories + "stories260K.llamacpp-f32.gguf");
  const auto dir = temp_dir("gguf");
  const std::string out = (dir / "s.gguf").string();
  write_gguf(out, legacy, DType::F32, gguf_tokenizer_kvs(src));
  const auto back = load_checkpoint(out);
  expect_identical(legacy, back);
  // The raw q rows in our file equal llama.cpp's (both interleaved).
  const auto ours = GgufFile::open(out);
  for (const char* name : {"blk.0.attn_q.weight", "blk.4.attn_k.weight", "token_embd.weight"}) {
    const auto* a = ours.find_tensor(name);
    const auto* b = src.find_tensor(name);
    ASSERT_TRUE(a && b) << name;
    ASSERT_EQ(a->nbytes, b->nbytes);
    EXPECT_EQ(std::memcmp(a->data, b->data, a->nbytes), 0) << name;
  }
  EXPECT_EQ(ours.get_string_array("tokenizer.ggml.tokens"),
            src.get_string_array("tokenizer.ggml.tokens"));
  // Every model key llama.cpp's own converter wrote is in ours too, with the same value.
  for (const auto& [key, value] : src.kvs()) {
    if (key.rfind("llama.", 0) != 0 && key != "general.architecture") continue;
    const GgufValue* mine = ours.find(key);
    ASSERT_NE(mine, nullptr) << key;
    // llama-convert-llama2c-to-ggml writes its own default context (128), not the file's seq_len.
    if (key == "llama.context_length") continue;
    EXPECT_EQ(mine->to_string(), value.to_string()) << key;
  }
  fs::remove_all(dir);
}

TEST(CheckpointDataTest, LegacyAndV1WritersRoundTrip) {
  const auto legacy = load_checkpoint(kStories + "stories260K.bin", with_tokenizer());
  const auto dir = temp_dir("l2c");
  write_llama2c_legacy((dir / "legacy.bin").string(), legacy);
  write_llama2c_v1((dir / "v1.bin").string(), legacy);
  expect_identical(legacy, load_checkpoint((dir / "legacy.bin").string(), with_tokenizer()));
  expect_identical(legacy, load_checkpoint((dir / "v1.bin").string(), with_tokenizer()));
  // v1 has no freq_cis tables, so our v1 file equals clebert's byte for byte.
  EXPECT_EQ(sha256_file_hex((dir / "v1.bin").string()),
            sha256_file_hex(kStories + "stories260K_v1_ak42_clebert.bin"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmopt::io
