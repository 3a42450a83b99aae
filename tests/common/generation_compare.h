// The equivalence tests' comparison of two runs of the same requests (relay on against off,
// sharded against one rank): the same greedy tokens, and every captured logits row within a
// tolerance relative to the row's scale.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace relayllm::testing {

// max |a - b| / max |b|: a row's largest difference against the logit scale.
inline double max_relative_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, double(std::fabs(a[i] - b[i])));
    scale = std::max(scale, double(std::fabs(b[i])));
  }
  return diff / std::max(scale, 1e-6);
}

// `Run` has `tokens` (per request, the generated ids) and `logits` (per request, the
// captured rows); `want` is the reference.
template <typename Run>
void expect_same_generations(const Run& got, const Run& want, double tolerance,
                             const std::string& what) {
  ASSERT_EQ(got.tokens.size(), want.tokens.size()) << what;
  for (size_t r = 0; r < want.tokens.size(); ++r) {
    EXPECT_EQ(got.tokens[r], want.tokens[r]) << what << ", request " << r;
    ASSERT_EQ(got.logits[r].size(), want.logits[r].size()) << what << ", request " << r;
    for (size_t s = 0; s < want.logits[r].size(); ++s)
      EXPECT_LT(max_relative_diff(got.logits[r][s], want.logits[r][s]), tolerance)
          << what << ", request " << r << ", step " << s;
  }
}

}  // namespace relayllm::testing
