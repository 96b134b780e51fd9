// The sampler against the distribution it must draw from, computed here in float64.
#include "infer/sampling.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace llmopt::infer {
namespace {

const std::vector<float> kLogits = {0.1f, 2.0f, -1.0f, 1.9f, 0.0f};

TEST(Sampler, GreedyIsFirstArgmax) {
  Sampler s(0);
  SamplingOptions o;
  EXPECT_EQ(s.sample(kLogits.data(), 5, o), 1);
  const std::vector<float> tie = {1.0f, 3.0f, 3.0f};
  EXPECT_EQ(s.sample(tie.data(), 3, o), 1);
}

// Frequencies of 40000 draws at temperature 0.7 against softmax(logits / 0.7): each within 5
// binomial standard deviations (a false failure has probability < 1e-5 per category).
TEST(Sampler, DrawsFollowTheTemperedSoftmax) {
  SamplingOptions o;
  o.temperature = 0.7;
  Sampler s(123);
  const int N = 40000;
  std::vector<int> count(5);
  for (int i = 0; i < N; ++i) ++count[s.sample(kLogits.data(), 5, o)];
  double z = 0;
  std::vector<double> p(5);
  for (int i = 0; i < 5; ++i) z += (p[i] = std::exp(kLogits[i] / 0.7));
  for (int i = 0; i < 5; ++i) {
    p[i] /= z;
    EXPECT_NEAR(count[i] / double(N), p[i], 5 * std::sqrt(p[i] * (1 - p[i]) / N)) << i;
  }
}

TEST(Sampler, TopKAndTopPTruncate) {
  Sampler s(7);
  SamplingOptions k1;
  k1.temperature = 1.0;
  k1.top_k = 1;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(s.sample(kLogits.data(), 5, k1), 1);
  SamplingOptions k2 = k1;
  k2.top_k = 2;
  int ones = 0;
  for (int i = 0; i < 2000; ++i) {
    const auto t = s.sample(kLogits.data(), 5, k2);
    ASSERT_TRUE(t == 1 || t == 3);
    ones += t == 1;
  }
  // Renormalized over {1, 3}: p(1) = 1 / (1 + e^-0.1) = 0.525; 5 sd = 0.056.
  EXPECT_NEAR(ones / 2000.0, 0.525, 0.056);
  SamplingOptions p = k1;
  p.top_k = 0;
  p.top_p = 0.3;  // the top token alone holds ~44% of the mass
  for (int i = 0; i < 20; ++i) EXPECT_EQ(s.sample(kLogits.data(), 5, p), 1);
  p.top_p = 0.5;  // 44% < 50%: the second token (40%) joins, the rest never
  for (int i = 0; i < 200; ++i) {
    const auto t = s.sample(kLogits.data(), 5, p);
    EXPECT_TRUE(t == 1 || t == 3);
  }
}

TEST(Sampler, SameSeedSameDraws) {
  SamplingOptions o;
  o.temperature = 1.0;
  Sampler a(42), b(42), c(43);
  std::vector<int64_t> da, db, dc;
  for (int i = 0; i < 64; ++i) {
    da.push_back(a.sample(kLogits.data(), 5, o));
    db.push_back(b.sample(kLogits.data(), 5, o));
    dc.push_back(c.sample(kLogits.data(), 5, o));
  }
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
}

}  // namespace
}  // namespace llmopt::infer
