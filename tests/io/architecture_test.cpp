// The architecture description against the names and layouts its users know: Hugging Face's
// modeling_llama parameter names, llama.cpp's tensor names (convert_hf_to_gguf.py / llama-arch.cpp)
// and the q/k RoPE permutation of llama.cpp's converter.
#include <gtest/gtest.h>

#include <set>

#include "io/architecture.h"

namespace llmopt::io::arch {
namespace {

ModelConfig cfg(bool bias, bool tied) {
  ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 50;
  c.attention_bias = bias;
  c.tie_word_embeddings = tied;
  return c;
}

TEST(Architecture, TensorListMatchesHuggingFaceNamesAndShapes) {
  const auto t = tensors(cfg(false, false));
  // 1 embedding + 9 per layer + final norm + lm_head.
  ASSERT_EQ(t.size(), 1u + 9u * 3u + 2u);
  EXPECT_EQ(t.front().hf_name, "model.embed_tokens.weight");
  EXPECT_EQ(t.front().gguf_name, "token_embd.weight");
  EXPECT_EQ(t.front().shape, (std::vector<int64_t>{50, 64}));
  EXPECT_EQ(t[1].hf_name, "model.layers.0.input_layernorm.weight");
  EXPECT_EQ(t[2].hf_name, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(t[2].gguf_name, "blk.0.attn_q.weight");
  EXPECT_EQ(t[2].shape, (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(t[2].permute_heads, 8);
  EXPECT_EQ(t[3].hf_name, "model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(t[3].shape, (std::vector<int64_t>{16, 64}));
  EXPECT_EQ(t[3].permute_heads, 2);
  EXPECT_EQ(t[4].permute_heads, 0);  // v is not rotated
  EXPECT_EQ(t[5].gguf_name, "blk.0.attn_output.weight");
  EXPECT_EQ(t[6].hf_name, "model.layers.0.post_attention_layernorm.weight");
  EXPECT_EQ(t[6].gguf_name, "blk.0.ffn_norm.weight");
  EXPECT_EQ(t[7].hf_name, "model.layers.0.mlp.gate_proj.weight");
  EXPECT_EQ(t[9].hf_name, "model.layers.0.mlp.down_proj.weight");
  EXPECT_EQ(t[9].shape, (std::vector<int64_t>{64, 96}));
  EXPECT_EQ(t[t.size() - 2].gguf_name, "output_norm.weight");
  EXPECT_EQ(t.back().hf_name, "lm_head.weight");
  EXPECT_EQ(t.back().gguf_name, "output.weight");
}

TEST(Architecture, BiasesAndTiedHeads) {
  const auto t = tensors(cfg(true, true));
  ASSERT_EQ(t.size(), 1u + 12u * 3u + 1u);
  // HF order: q, k, v, o weights, then the q/k/v biases.
  EXPECT_EQ(t[6].hf_name, "model.layers.0.self_attn.q_proj.bias");
  EXPECT_EQ(t[6].gguf_name, "blk.0.attn_q.bias");
  EXPECT_EQ(t[6].shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(t[8].hf_name, "model.layers.0.self_attn.v_proj.bias");
  EXPECT_EQ(t.back().hf_name, "model.norm.weight");
}

TEST(Architecture, LinearsAndModulePaths) {
  const auto l = linears(cfg(false, false));
  ASSERT_EQ(l.size(), 7u * 3u + 1u);
  EXPECT_EQ(l[0].path, "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(l[0].parent, "model.layers.0.self_attn");
  EXPECT_EQ(l[0].child, "q_proj");
  EXPECT_EQ(l[6].path, "model.layers.0.mlp.down_proj");
  EXPECT_EQ(l[6].out, 64);
  EXPECT_EQ(l[6].in, 96);
  EXPECT_EQ(l.back().path, "lm_head");
  EXPECT_EQ(l.back().parent, "");
  EXPECT_TRUE(find_linear(cfg(false, false), "model.layers.2.mlp.up_proj").has_value());
  EXPECT_FALSE(find_linear(cfg(false, false), "model.layers.3.mlp.up_proj").has_value());
  EXPECT_FALSE(find_linear(cfg(false, true), "lm_head").has_value());
  EXPECT_FALSE(find_linear(cfg(false, false), "model.layers.0.input_layernorm").has_value());
  for (size_t i = 0; i < kLayerLinears.size(); ++i) EXPECT_EQ(layer_linear_index(kLayerLinears[i]), int(i));
  EXPECT_EQ(layer_linear_index(Role::Output), -1);
}

TEST(Architecture, NameParsingRoundTripsAndRejectsStrangers) {
  std::set<std::string> hf, gguf;
  for (const auto& t : tensors(cfg(true, false))) {
    const auto a = parse_hf_name(t.hf_name);
    ASSERT_TRUE(a) << t.hf_name;
    EXPECT_EQ(gguf_name(a->role, a->layer, a->bias), t.gguf_name);
    const auto b = parse_gguf_name(t.gguf_name);
    ASSERT_TRUE(b) << t.gguf_name;
    EXPECT_EQ(hf_name(b->role, b->layer, b->bias), t.hf_name);
    EXPECT_TRUE(hf.insert(t.hf_name).second);
    EXPECT_TRUE(gguf.insert(t.gguf_name).second);
  }
  for (const char* bad : {"blk.x.attn_q.weight", "blk.01.attn_q.weight", "rope_freqs.weight", "blk.1.attn_o.weight",
                          "blk.1.ffn_down.bias", "blk..attn_q.weight", "model.layers.-1.mlp.up_proj.weight"})
    EXPECT_FALSE(parse_gguf_name(bad) || parse_hf_name(bad)) << bad;
  EXPECT_FALSE(parse_hf_name("model.layers.0.mlp.up_proj.bias"));  // no MLP biases in the family
}

}  // namespace
}  // namespace llmopt::io::arch
