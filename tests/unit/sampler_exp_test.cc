// The sampler's exponential pass: every implementation this CPU runs gives the portable one's
// bits (so a seeded request samples the same tokens on any CPU), and the portable one is exp
// within its stated error.
#include "relayllm/engine/sampler_exp.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace relayllm {
namespace {

// Logits as a model's rows hold them, and the edges: -inf (a masked token), values far below
// the max (weights that underflow), the max itself, denormal and huge differences.
std::vector<float> logit_row(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 4.0f);
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng);
  const float edges[] = {-std::numeric_limits<float>::infinity(),
                         -1e30f,
                         -200.0f,
                         -87.5f,
                         -87.0f,
                         -86.9f,
                         1e-40f,
                         0.0f,
                         -0.0f,
                         12.0f};
  for (size_t i = 0; i < n && i < std::size(edges) * 7; i += 7) x[i] = edges[i / 7];
  // The sampler's rows always hold a finite maximum (an all -inf row is refused before).
  if (n == 1) x[0] = 0.5f;
  return x;
}

TEST(SamplerExp, EveryImplementationGivesThePortableBits) {
  std::mt19937 rng(3);
  const std::vector<sampler_exp::ExpRowImpl> impls = sampler_exp::usable_exp_rows();
  ASSERT_FALSE(impls.empty());
  ASSERT_STREQ(impls.front().isa, "portable");
  for (size_t n :
       {size_t(1), size_t(7), size_t(8), size_t(9), size_t(77), size_t(32000), size_t(49155)}) {
    const std::vector<float> x = logit_row(n, rng);
    float m = -std::numeric_limits<float>::infinity();
    for (float v : x) m = std::max(m, v);
    for (float scale : {1.0f, 1.0f / 0.7f, 1.0f / 1.3f, 100.0f})
      for (float min_w : {0.0f, 0.05f}) {
        std::vector<float> want(n);
        impls.front().fn(x.data(), want.data(), n, m, scale, min_w);
        for (const sampler_exp::ExpRowImpl& impl : impls) {
          std::vector<float> got(n, std::numeric_limits<float>::quiet_NaN());
          impl.fn(x.data(), got.data(), n, m, scale, min_w);
          ASSERT_EQ(std::memcmp(got.data(), want.data(), n * sizeof(float)), 0)
              << impl.isa << " n=" << n << " scale=" << scale << " min_w=" << min_w;
          std::vector<float> in_place = x;  // out may be x
          impl.fn(in_place.data(), in_place.data(), n, m, scale, min_w);
          ASSERT_EQ(std::memcmp(in_place.data(), want.data(), n * sizeof(float)), 0) << impl.isa;
        }
        for (size_t i = 0; i < n; ++i) {
          float w = sampler_exp::exp_nonpositive((x[i] - m) * scale);
          if (w < min_w) w = 0.0f;
          ASSERT_EQ(std::memcmp(&w, &want[i], sizeof w), 0) << "scalar, element " << i;
        }
      }
  }
}

TEST(SamplerExp, PortableIsExpWithinTwoUlpAndZeroBelowTheRange) {
  std::vector<float> x;
  for (float v = -86.99f; v <= 0.0f; v += 0.0137f) x.push_back(v);
  x.push_back(0.0f);
  std::vector<float> w(x.size());
  sampler_exp::usable_exp_rows().front().fn(x.data(), w.data(), x.size(), 0.0f, 1.0f, 0.0f);
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(double(x[i]));
    EXPECT_NEAR(w[i], want, 2.5e-7 * want) << "x=" << x[i];
  }
  EXPECT_EQ(sampler_exp::exp_nonpositive(0.0f), 1.0f);
  EXPECT_EQ(sampler_exp::exp_nonpositive(-87.01f), 0.0f);
  EXPECT_EQ(sampler_exp::exp_nonpositive(-std::numeric_limits<float>::infinity()), 0.0f);
}

}  // namespace
}  // namespace relayllm
