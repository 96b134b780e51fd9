// GPTQ's safetensors layout (io/gptq.h): hand-built words checked against the layout as
// AutoGPTQ's QuantLinear.pack writes it (qweight packed along inputs, qzeros = zero − 1 packed
// along outputs, scales [groups, out], g_idx), pack → unpack keeps the int-N storage, act-order
// g_idx survives, and what the layout cannot hold is refused naming the tensor.
#include "io/gptq.h"

#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "core/half.h"

namespace llmopt::io {
namespace {

kernels::IntNStorage random_storage(int64_t out, int64_t in, int bits, int64_t group, bool sym, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(out * in));
  for (auto& v : w) v = d(rng);
  return kernels::intn_quantize(w.data(), out, in, bits, group, sym);
}

TEST(Gptq, HandBuiltFourBitWords) {
  // out = 8, in = 8, one group, asym: codes[o][i] = (o + i) % 16, zero 3 + o % 4, scale 0.5.
  const int64_t out = 8, in = 8;
  std::vector<uint8_t> codes(out * in);
  std::vector<kernels::IntNGrid> grids(out);
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t i = 0; i < in; ++i) codes[o * in + i] = static_cast<uint8_t>((o + i) % 16);
    grids[o] = {0.5f, static_cast<float>(3 + o % 4)};
  }
  const auto s = kernels::intn_from_codes(codes.data(), grids.data(), out, in, 4, -1, false);
  const GptqTensors t = gptq_pack(s.view(), "m.weight");
  ASSERT_EQ(t.qweight.size(), 8u);  // [8·4/32 = 1, 8]
  for (int64_t o = 0; o < out; ++o) {
    uint32_t want = 0;
    for (int64_t i = 0; i < 8; ++i) want |= static_cast<uint32_t>((o + i) % 16) << (4 * i);
    EXPECT_EQ(static_cast<uint32_t>(t.qweight[o]), want) << o;
  }
  ASSERT_EQ(t.qzeros.size(), 1u);  // [1 group, 8·4/32 = 1]
  uint32_t zw = 0;
  for (int64_t o = 0; o < out; ++o) zw |= static_cast<uint32_t>(3 + o % 4 - 1) << (4 * o);
  EXPECT_EQ(static_cast<uint32_t>(t.qzeros[0]), zw);
  for (int64_t o = 0; o < out; ++o) EXPECT_EQ(f16_to_f32(t.scales[o]), 0.5f);
  for (int64_t i = 0; i < in; ++i) EXPECT_EQ(t.g_idx[i], 0);
}

TEST(Gptq, SymmetricZerosAreSevenAndEightBitWordsHoldFour) {
  const auto s = random_storage(8, 64, 4, 32, true, 1);
  const GptqTensors t = gptq_pack(s.view(), "m.weight");
  for (int32_t z : t.qzeros) EXPECT_EQ(static_cast<uint32_t>(z), 0x77777777u);
  const auto s8 = random_storage(4, 8, 8, -1, true, 2);
  const GptqTensors t8 = gptq_pack(s8.view(), "m.weight");
  EXPECT_EQ(t8.qweight.size(), 2u * 4u);  // [8·8/32 = 2, 4]
  EXPECT_EQ(static_cast<uint32_t>(t8.qzeros[0]), 0x7f7f7f7fu);
  EXPECT_EQ(static_cast<uint32_t>(t8.qweight[0]) & 0xffu, s8.codes[0]);  // input 0 of output 0
  EXPECT_EQ(static_cast<uint32_t>(t8.qweight[0]) >> 24, s8.codes[3]);   // input 3 of output 0
  EXPECT_EQ(static_cast<uint32_t>(t8.qweight[4]) & 0xffu, s8.codes[4]);  // input 4: second row of words
}

TEST(Gptq, PackUnpackKeepsStorage) {
  for (int bits : {2, 4, 8}) {
    for (int64_t group : {32, 64, 128, -1}) {
      for (bool sym : {true, false}) {
        auto s = random_storage(32, 256, bits, group, sym, 3 + bits);
        // Zero point 0 does not fit v1; the random data (min < 0 in every group) never has it.
        const GptqTensors t = gptq_pack(s.view(), "m.weight");
        GptqConfig c{bits, group, false, sym};
        const auto back = gptq_unpack(t.qweight.data(), t.qzeros.data(), t.scales.data(), t.g_idx.data(), 256, 32,
                                      t.groups, c, "m");
        EXPECT_EQ(back.codes, s.codes) << bits << " " << group << " " << sym;
        EXPECT_EQ(back.scales, s.scales);
        EXPECT_EQ(back.sym, sym);
        if (!sym) EXPECT_EQ(back.zeros, s.zeros);
        EXPECT_TRUE(back.g_idx.empty());
      }
    }
  }
}

TEST(Gptq, ActOrderGIdxSurvives) {
  auto s = random_storage(8, 64, 4, 32, false, 9);
  s.g_idx.resize(64);
  for (int64_t j = 0; j < 64; ++j) s.g_idx[j] = static_cast<int32_t>(((j * 3) % 64) / 32);
  const GptqTensors t = gptq_pack(s.view(), "m.weight");
  EXPECT_EQ(t.g_idx, s.g_idx);
  const auto back = gptq_unpack(t.qweight.data(), t.qzeros.data(), t.scales.data(), t.g_idx.data(), 64, 8, t.groups,
                                GptqConfig{4, 32, true, false}, "m");
  EXPECT_EQ(back.g_idx, s.g_idx);
  std::vector<float> a(8 * 64), b(8 * 64);
  kernels::intn_dequantize_rows(s.view(), 0, 8, a.data());
  kernels::intn_dequantize_rows(back.view(), 0, 8, b.data());
  EXPECT_EQ(a, b);
}

TEST(Gptq, WhatTheLayoutCannotHoldIsNamed) {
  const auto tail = random_storage(8, 172, 4, 64, true, 10);  // 172 = 2·64 + 44: tail group
  EXPECT_NE(gptq_cannot_hold(tail.view()).find("tail group"), std::string::npos);
  try {
    gptq_pack(tail.view(), "model.layers.0.mlp.down_proj.weight");
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.down_proj.weight"), std::string::npos);
  }
  EXPECT_FALSE(gptq_cannot_hold(random_storage(8, 64, 3, 32, true, 11).view()).empty());  // 3 bits
  EXPECT_FALSE(gptq_cannot_hold(random_storage(4, 64, 4, 32, true, 12).view()).empty());  // 4 rows: not a word
  // An all-positive group has zero point 0, which v1 stores as −1.
  std::vector<float> pos(8 * 32, 1.0f);
  const auto p = kernels::intn_quantize(pos.data(), 8, 32, 4, -1, false);
  EXPECT_NE(gptq_cannot_hold(p.view()).find("zero point 0"), std::string::npos);
}

TEST(Gptq, ConfigParsing) {
  const auto j = nlohmann::json::parse(
      R"({"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": true, "sym": false}})");
  const auto c = parse_gptq_config(j, "config.json");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->bits, 4);
  EXPECT_EQ(c->group_size, 128);
  EXPECT_TRUE(c->desc_act);
  EXPECT_FALSE(c->sym);
  EXPECT_FALSE(parse_gptq_config(nlohmann::json::parse(R"({"quantization_config": {"quant_method": "awq"}})"), "x"));
  EXPECT_THROW(parse_gptq_config(nlohmann::json::parse(R"({"quantization_config": {"quant_method": "gptq", "bits": 3}})"), "x"),
               InputError);
  EXPECT_THROW(parse_gptq_config(nlohmann::json::parse(
                                     R"({"quantization_config": {"quant_method": "gptq", "bits": 4, "checkpoint_format": "gptq_v2"}})"),
                                 "x"),
               InputError);
  const auto back = parse_gptq_config(nlohmann::json{{"quantization_config", gptq_config_json(*c)}}, "x");
  EXPECT_EQ(back->group_size, 128);
}

}  // namespace
}  // namespace llmopt::io
