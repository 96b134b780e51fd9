// RoPE inverse frequencies against HF transformers' definitions, re-derived here in float64 in
// the structure of its code (modeling_rope_utils._compute_llama3_parameters), plus hand-worked
// points of the Llama-3.1-8B configuration.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "infer/weights.h"

namespace llmopt::infer {
namespace {

std::vector<double> hf_inv_freq(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<double> inv(half);
  for (int64_t i = 0; i < half; ++i) inv[i] = 1.0 / std::pow(c.rope_theta, double(2 * i) / double(c.head_dim));
  if (c.rope_scaling.type != "llama3") return inv;
  const auto& s = c.rope_scaling;
  const double old_ctx = double(s.original_max_position_embeddings);
  const double low_freq_wavelen = old_ctx / s.low_freq_factor;
  const double high_freq_wavelen = old_ctx / s.high_freq_factor;
  for (auto& f : inv) {
    const double wavelen = 2 * M_PI / f;
    const double llama = wavelen > low_freq_wavelen ? f / s.factor : f;
    const double smooth = (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    const double smoothed = (1 - smooth) * llama / s.factor + smooth * llama;
    const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    f = medium ? smoothed : llama;
  }
  return inv;
}

ModelConfig llama31_8b() {
  ModelConfig c;
  c.head_dim = 128;
  c.rope_theta = 500000;
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = 8;
  c.rope_scaling.low_freq_factor = 1;
  c.rope_scaling.high_freq_factor = 4;
  c.rope_scaling.original_max_position_embeddings = 8192;
  return c;
}

TEST(RopeInvFreq, MatchesHfDefinitionPlainAndLlama3) {
  for (int variant = 0; variant < 2; ++variant) {
    ModelConfig c = llama31_8b();
    if (variant == 0) c.rope_scaling.type = "none", c.rope_theta = 10000, c.head_dim = 64;
    const auto ours = rope_inv_freq(c);
    const auto ref = hf_inv_freq(c);
    ASSERT_EQ(ours.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(ours[i], ref[i], 2e-7 * ref[i]) << i;  // one f32 rounding
  }
}

TEST(RopeInvFreq, Llama31HandWorkedPoints) {
  const auto inv = rope_inv_freq(llama31_8b());
  // i = 0: wavelength 2π < 2048 (high-frequency band): unchanged, 1.
  EXPECT_EQ(inv[0], 1.0f);
  // i = 63: 500000^(-126/128) = 2.4467e-6, wavelength 2.57e6 > 8192: divided by 8.
  EXPECT_NEAR(inv[63], std::pow(500000.0, -126.0 / 128.0) / 8, 1e-12);
  // Band edges are monotone: frequencies never increase with i.
  for (size_t i = 1; i < inv.size(); ++i) EXPECT_LE(inv[i], inv[i - 1]);
}

}  // namespace
}  // namespace llmopt::infer
