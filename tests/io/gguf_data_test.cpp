// GGUF reader on files written by llama.cpp itself (../shared, see DATA.md).
#include <gtest/gtest.h>

#include "core/error.h"
#include "io/gguf.h"

namespace llmopt::io {
namespace {

const std::string kShared = LLMOPT_SHARED_DIR;

TEST(GgufDataTest, ReadsLlamaCppF32Stories260K) {
  const auto g = GgufFile::open(kShared + "/models/stories260K/stories260K.llamacpp-f32.gguf");
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_EQ(g.data_offset() % 32, 0u);
  EXPECT_EQ(g.get_string("general.architecture"), "llama");
  // DATA.md: dim=64 hidden=172 layers=5 heads=8 kv_heads=4 vocab=512.
  EXPECT_EQ(g.get_u32("llama.embedding_length"), 64u);
  EXPECT_EQ(g.get_u32("llama.feed_forward_length"), 172u);
  EXPECT_EQ(g.get_u32("llama.block_count"), 5u);
  EXPECT_EQ(g.get_u32("llama.attention.head_count"), 8u);
  EXPECT_EQ(g.get_u32("llama.attention.head_count_kv"), 4u);
  EXPECT_EQ(g.get_string_array("tokenizer.ggml.tokens").size(), 512u);
  EXPECT_EQ(g.get_f32_array("tokenizer.ggml.scores").size(), 512u);
  EXPECT_EQ(g.get_i32_array("tokenizer.ggml.token_type").size(), 512u);
  const auto* emb = g.find_tensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->ne, (std::vector<int64_t>{64, 512}));
  EXPECT_EQ(emb->shape, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(emb->dtype, DType::F32);
  EXPECT_EQ(emb->nbytes, 512 * 64 * 4);
  const auto* down = g.find_tensor("blk.0.ffn_down.weight");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->shape, (std::vector<int64_t>{64, 172}));
}

TEST(GgufDataTest, ReadsLlamaCppQ4KMStories260K) {
  const auto g = GgufFile::open(kShared + "/models/stories260K/stories260K.llamacpp-Q4_K_M.gguf");
  // DATA.md: rows of 64 and 172 fit no k-quant block, so llama.cpp fell back to q5_0/q8_0/f16.
  bool saw_quant = false;
  for (const auto& t : g.tensors()) {
    ASSERT_TRUE(t.dtype.has_value()) << t.name;
    if (*t.dtype == DType::Q5_0 || *t.dtype == DType::Q8_0) saw_quant = true;
  }
  EXPECT_TRUE(saw_quant);
  EXPECT_THROW(g.get_string("llama.block_count"), InputError);
}

TEST(GgufDataTest, ReadsEveryVocabOnlyFile) {
  for (const char* name :
       {"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf", "ggml-vocab-phi-3.gguf",
        "ggml-vocab-deepseek-llm.gguf", "ggml-vocab-falcon.gguf"}) {
    const auto g = GgufFile::open(kShared + "/tokenizers/llamacpp-vocab/" + name);
    EXPECT_GT(g.get_array_size("tokenizer.ggml.tokens"), 1000u) << name;
    EXPECT_FALSE(g.get_string("tokenizer.ggml.model").empty()) << name;
  }
}

}  // namespace
}  // namespace llmopt::io
