// GGUF LoRA adapters (io/gguf_lora.h): the file holds what llama.cpp's loader checks
// (llama-adapter.cpp: general.type, adapter.type, adapter.lora.alpha, ne[0] of lora_a = the
// weight's ne[0], ne[1] of lora_b = the weight's ne[1], lora_a ne[1] = lora_b ne[0]), q/k rows of
// B in GGUF's interleaved order computed here by index (row 2i+s of a head holds HF row
// s*head_dim/2+i), and bad input is InputError naming the module.
#include "io/gguf_lora.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "io/gguf.h"
#include "io_test_util.h"

namespace llmopt::io {
namespace {
using testing::TempDir;

ModelConfig tiny_config() {
  ModelConfig c;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.vocab_size = 32;
  return c;
}

GgufLoraPair pair(const std::string& path, int64_t r, int64_t out, int64_t in, float seed) {
  GgufLoraPair p;
  p.module_path = path;
  p.r = r;
  for (int64_t i = 0; i < r * in; ++i) p.A.push_back(seed + 0.001f * static_cast<float>(i));
  for (int64_t i = 0; i < out * r; ++i) p.B.push_back(-seed + 0.01f * static_cast<float>(i));
  return p;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "no error";
}

TEST(GgufLoraTest, WritesWhatLlamaCppChecksWithQkRowsInterleaved) {
  TempDir dir("gguf_lora");
  const ModelConfig c = tiny_config();
  GgufLoraAdapter a;
  a.alpha = 8;
  a.pairs.push_back(pair("model.layers.1.self_attn.q_proj", 2, 16, 16, 1));
  a.pairs.push_back(pair("model.layers.1.self_attn.k_proj", 2, 8, 16, 2));
  a.pairs.push_back(pair("model.layers.0.mlp.down_proj", 3, 16, 24, 3));
  const std::string path = dir.file("a.gguf");
  write_gguf_lora(path, c, a);

  const GgufFile g = GgufFile::open(path);
  EXPECT_EQ(g.get_string("general.type"), "adapter");
  EXPECT_EQ(g.get_string("general.architecture"), "llama");
  EXPECT_EQ(g.get_string("adapter.type"), "lora");
  EXPECT_EQ(g.get_f32("adapter.lora.alpha"), 8.0f);
  ASSERT_EQ(g.tensors().size(), 6u);
  const GgufTensorInfo* qa = g.find_tensor("blk.1.attn_q.weight.lora_a");
  const GgufTensorInfo* qb = g.find_tensor("blk.1.attn_q.weight.lora_b");
  const GgufTensorInfo* kb = g.find_tensor("blk.1.attn_k.weight.lora_b");
  const GgufTensorInfo* da = g.find_tensor("blk.0.ffn_down.weight.lora_a");
  const GgufTensorInfo* db = g.find_tensor("blk.0.ffn_down.weight.lora_b");
  ASSERT_TRUE(qa && qb && kb && da && db);
  // ggml ne: lora_a [in, r], lora_b [r, out] (the weight is ne [in, out]).
  EXPECT_EQ(qa->ne, (std::vector<int64_t>{16, 2}));
  EXPECT_EQ(qb->ne, (std::vector<int64_t>{2, 16}));
  EXPECT_EQ(kb->ne, (std::vector<int64_t>{2, 8}));
  EXPECT_EQ(da->ne, (std::vector<int64_t>{24, 3}));
  EXPECT_EQ(db->ne, (std::vector<int64_t>{3, 16}));
  EXPECT_EQ(qa->ggml_type, 0u);  // F32

  const auto f32 = [](const GgufTensorInfo* t) { return reinterpret_cast<const float*>(t->data); };
  // A and non-RoPE B as given.
  for (int64_t i = 0; i < 32; ++i) EXPECT_EQ(f32(qa)[i], a.pairs[0].A[i]);
  for (int64_t i = 0; i < 48; ++i) EXPECT_EQ(f32(db)[i], a.pairs[2].B[i]);
  // q (4 heads of 4 rows) and k (2 heads): GGUF row h*4 + 2i + s = HF row h*4 + s*2 + i.
  for (const auto& [t, src, heads] : {std::tuple{qb, &a.pairs[0], 4}, std::tuple{kb, &a.pairs[1], 2}}) {
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < 2; ++i)
        for (int64_t s = 0; s < 2; ++s)
          for (int64_t k = 0; k < 2; ++k)
            EXPECT_EQ(f32(t)[(h * 4 + 2 * i + s) * 2 + k], src->B[(h * 4 + s * 2 + i) * 2 + k]) << t->name;
  }

  // Read back: B in HF order again, ranks from the tensors.
  const GgufLoraAdapter back = read_gguf_lora(path, c);
  EXPECT_EQ(back.alpha, 8.0f);
  ASSERT_EQ(back.pairs.size(), 3u);
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_EQ(back.pairs[k].module_path, a.pairs[k].module_path);
    EXPECT_EQ(back.pairs[k].r, a.pairs[k].r);
    EXPECT_EQ(back.pairs[k].A, a.pairs[k].A);
    EXPECT_EQ(back.pairs[k].B, a.pairs[k].B);
  }
}

TEST(GgufLoraTest, Qwen2KeepsHfOrderAndF16Halves) {
  TempDir dir("gguf_lora_qwen");
  const ModelConfig c = tiny_config();
  GgufLoraAdapter a;
  a.architecture = "qwen2";
  a.alpha = 4;
  a.pairs.push_back(pair("model.layers.0.self_attn.q_proj", 2, 16, 16, 1));
  const std::string path = dir.file("q.gguf");
  write_gguf_lora(path, c, a, DType::F16);
  const GgufFile g = GgufFile::open(path);
  EXPECT_EQ(g.get_string("general.architecture"), "qwen2");
  EXPECT_EQ(g.find_tensor("blk.0.attn_q.weight.lora_b")->ggml_type, 1u);  // F16
  const GgufLoraAdapter back = read_gguf_lora(path, c);
  ASSERT_EQ(back.pairs.size(), 1u);
  for (size_t i = 0; i < a.pairs[0].B.size(); ++i)  // f16: relative error <= 2^-11
    EXPECT_NEAR(back.pairs[0].B[i], a.pairs[0].B[i], std::abs(a.pairs[0].B[i]) * 0x1p-11f + 1e-7f) << i;
}

TEST(GgufLoraTest, BadInputNamesTheModule) {
  TempDir dir("gguf_lora_bad");
  ModelConfig c = tiny_config();
  GgufLoraAdapter a;
  a.alpha = 8;
  a.pairs.push_back(pair("model.layers.5.self_attn.q_proj", 2, 16, 16, 1));
  EXPECT_NE(error_of([&] { write_gguf_lora(dir.file("x.gguf"), c, a); }).find("model.layers.5.self_attn.q_proj"),
            std::string::npos);
  a.pairs[0] = pair("model.layers.0.self_attn.k_proj", 2, 16, 16, 1);  // k has 8 rows, not 16
  const std::string e = error_of([&] { write_gguf_lora(dir.file("x.gguf"), c, a); });
  EXPECT_NE(e.find("k_proj"), std::string::npos) << e;
  EXPECT_NE(e.find("out=8"), std::string::npos) << e;
  c.tie_word_embeddings = true;
  a.pairs[0] = pair("lm_head", 2, 32, 16, 1);
  EXPECT_NE(error_of([&] { write_gguf_lora(dir.file("x.gguf"), c, a); }).find("tied"), std::string::npos);
  a.architecture = "gpt2";
  EXPECT_NE(error_of([&] { write_gguf_lora(dir.file("x.gguf"), c, a); }).find("gpt2"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.gguf")));
  // A model GGUF is not an adapter.
  c.tie_word_embeddings = false;
  GgufLoraAdapter ok;
  ok.alpha = 1;
  ok.pairs.push_back(pair("model.layers.0.mlp.up_proj", 1, 24, 16, 1));
  write_gguf_lora(dir.file("ok.gguf"), c, ok);
  ModelConfig bigger = c;
  bigger.intermediate_size = 32;
  const std::string e2 = error_of([&] { read_gguf_lora(dir.file("ok.gguf"), bigger); });
  EXPECT_NE(e2.find("blk.0.ffn_up.weight"), std::string::npos) << e2;
}

}  // namespace
}  // namespace llmopt::io
