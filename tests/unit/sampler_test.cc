#include "relayllm/engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "relayllm/common/error.h"
#include "relayllm/engine/sampling_params.h"

namespace relayllm {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct Call {
  explicit Call(std::vector<float> l) : logits(std::move(l)) {}

  std::vector<float> logits;
  SamplingParams params;
  std::vector<int32_t> prompt;
  std::vector<int32_t> output;
  std::vector<int32_t> eos;

  SampleInput input() const { return {logits, &params, prompt, output, eos}; }
};

SampleOutput sample_once(const Call& c, RequestRng& rng) {
  std::vector<float> scratch;
  return sample_token(c.input(), rng, scratch);
}

int32_t greedy(Call c) {
  c.params.temperature = 0.0f;
  RequestRng rng(1);
  return sample_once(c, rng).token;
}

std::vector<int> sample_counts(const Call& c, int n, uint64_t seed) {
  RequestRng rng(seed);
  std::vector<float> scratch;
  std::vector<int> counts(c.logits.size(), 0);
  for (int i = 0; i < n; ++i) counts[size_t(sample_token(c.input(), rng, scratch).token)]++;
  return counts;
}

// Independent oracle in double with full sorts: temperature, top-k, top-p, min-p, renormalised.
std::vector<double> reference_distribution(const std::vector<float>& logits,
                                           const SamplingParams& p) {
  const size_t n = logits.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return logits[a] > logits[b]; });
  size_t keep = n;
  if (p.top_k > 0) keep = std::min(keep, size_t(p.top_k));
  double m = logits[order[0]];
  std::vector<double> w(n, 0.0);
  double total = 0.0;
  for (size_t r = 0; r < keep; ++r) {
    w[order[r]] = std::exp((double(logits[order[r]]) - m) / double(p.temperature));
    total += w[order[r]];
  }
  if (p.top_p < 1.0f) {
    double cum = 0.0;
    size_t r = 0;
    for (; r < keep; ++r) {
      cum += w[order[r]];
      if (cum >= double(p.top_p) * total) break;
    }
    for (size_t q = r + 1; q < keep; ++q) w[order[q]] = 0.0;
  }
  const double thr = double(p.min_p) * w[order[0]];
  for (double& x : w) {
    if (x < thr) x = 0.0;
  }
  const double sum = std::accumulate(w.begin(), w.end(), 0.0);
  for (double& x : w) x /= sum;
  return w;
}

// Zero counts where the oracle gives zero; elsewhere a chi-square well inside its spread and
// every bin within 5 sigma. The rng is seeded, so the outcome is fixed, not flaky.
void expect_matches(const std::vector<int>& counts, const std::vector<double>& probs, int n) {
  double chi2 = 0.0;
  int dof = -1;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] == 0.0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " is outside the allowed support";
      continue;
    }
    const double e = probs[i] * n;
    const double sigma = std::sqrt(e * (1.0 - probs[i]));
    EXPECT_LE(std::fabs(counts[i] - e), 5.0 * sigma + 2.0)
        << "token " << i << " expected " << e << " got " << counts[i];
    chi2 += (counts[i] - e) * (counts[i] - e) / e;
    ++dof;
  }
  if (dof > 0) {
    EXPECT_LT(chi2, dof + 6.0 * std::sqrt(2.0 * dof)) << "dof " << dof;
  }
}

std::vector<float> random_logits(size_t n, uint64_t seed, float scale) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(gen);
  return v;
}

std::vector<float> logits_of_probs(const std::vector<double>& probs) {
  std::vector<float> v;
  for (double p : probs) v.push_back(float(std::log(p)));
  return v;
}

// ---- greedy ----

TEST(Sampler, GreedyPicksArgmaxAndLowestIdOnTies) {
  Call c{{1.0f, 5.0f, 3.0f, 5.0f}};
  EXPECT_EQ(greedy(c), 1);
  c.logits = {2.0f, 2.0f, 2.0f};
  EXPECT_EQ(greedy(c), 0);
  c.logits = {kNegInf, -3.0f, kNegInf, -1.0f};
  EXPECT_EQ(greedy(c), 3);
}

TEST(Sampler, TinyTemperatureIsGreedyAndIgnoresFilters) {
  Call c{{0.1f, 0.3f, 0.2f}};
  c.params.temperature = 1e-6f;
  c.params.top_k = 1;
  c.params.top_p = 0.1f;
  RequestRng rng(7);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sample_once(c, rng).token, 1);
}

// ---- distributions ----

TEST(Sampler, TemperatureOneMatchesSoftmax) {
  Call c{{0.5f, 1.0f, -0.3f, 2.0f, 0.0f}};
  const int n = 100000;
  expect_matches(sample_counts(c, n, 11), reference_distribution(c.logits, c.params), n);
}

TEST(Sampler, TemperatureSharpensAndFlattens) {
  Call c{{0.5f, 1.0f, -0.3f, 2.0f, 0.0f}};
  const int n = 100000;
  for (float t : {0.3f, 0.7f, 2.5f}) {
    c.params.temperature = t;
    auto probs = reference_distribution(c.logits, c.params);
    expect_matches(sample_counts(c, n, 12), probs, n);
  }
  // Sanity of the oracle itself against a hand computation at T = 0.5.
  c.params.temperature = 0.5f;
  auto probs = reference_distribution(c.logits, c.params);
  double z = 0.0;
  for (float l : c.logits) z += std::exp(l / 0.5);
  EXPECT_NEAR(probs[3], std::exp(2.0 / 0.5) / z, 1e-12);
}

TEST(Sampler, TopKRestrictsToKBest) {
  Call c{{0.5f, 1.0f, -0.3f, 2.0f, 0.0f}};
  c.params.top_k = 2;
  const int n = 50000;
  auto counts = sample_counts(c, n, 13);
  EXPECT_EQ(counts[0] + counts[2] + counts[4], 0);
  // Renormalised over ids 3 and 1: p(3) = e^2 / (e^2 + e^1).
  const double p3 = std::exp(2.0) / (std::exp(2.0) + std::exp(1.0));
  expect_matches(counts, {0.0, 1.0 - p3, 0.0, p3, 0.0}, n);
}

TEST(Sampler, TopKTiesKeepLowerIds) {
  Call c{{1.0f, 3.0f, 1.0f, 3.0f, 3.0f}};
  c.params.top_k = 2;
  auto counts = sample_counts(c, 2000, 14);
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[3], 0);
  EXPECT_EQ(counts[0] + counts[2] + counts[4], 0);
}

TEST(Sampler, TopKAtOrAboveVocabIsOff) {
  Call c{{0.5f, 1.0f, -0.3f}};
  c.params.top_k = 3;
  const int n = 50000;
  expect_matches(sample_counts(c, n, 15), reference_distribution(c.logits, SamplingParams{}), n);
  c.params.top_k = 0;
  expect_matches(sample_counts(c, n, 16), reference_distribution(c.logits, SamplingParams{}), n);
}

TEST(Sampler, TopPKeepsSmallestNucleus) {
  Call c{logits_of_probs({0.15, 0.5, 0.05, 0.3})};
  const int n = 50000;
  c.params.top_p = 0.75f;  // 0.5 + 0.3 reaches it
  auto counts = sample_counts(c, n, 17);
  expect_matches(counts, {0.0, 0.5 / 0.8, 0.0, 0.3 / 0.8}, n);
  c.params.top_p = 0.9f;  // needs 0.15 too
  counts = sample_counts(c, n, 18);
  expect_matches(counts, {0.15 / 0.95, 0.5 / 0.95, 0.0, 0.3 / 0.95}, n);
  c.params.top_p = 0.01f;  // always at least the top token
  counts = sample_counts(c, 1000, 19);
  EXPECT_EQ(counts[1], 1000);
}

TEST(Sampler, MinPDropsTokensBelowFractionOfTop) {
  Call c{logits_of_probs({0.15, 0.5, 0.05, 0.3})};
  c.params.min_p = 0.2f;  // threshold 0.1 drops only id 2
  const int n = 50000;
  expect_matches(sample_counts(c, n, 20), {0.15 / 0.95, 0.5 / 0.95, 0.0, 0.3 / 0.95}, n);
  c.params.min_p = 0.5f;  // threshold 0.25 keeps ids 1 and 3
  expect_matches(sample_counts(c, n, 21), {0.0, 0.5 / 0.8, 0.0, 0.3 / 0.8}, n);
}

TEST(Sampler, CombinedFiltersMatchOracle) {
  const auto logits = random_logits(64, 5, 2.0f);
  struct Case {
    float t, p, min_p;
    int32_t k;
  };
  const Case cases[] = {{1.0f, 0.9f, 0.0f, -1},   {0.8f, 1.0f, 0.0f, 10}, {1.3f, 0.7f, 0.0f, 20},
                        {0.9f, 0.95f, 0.05f, 30}, {1.0f, 1.0f, 0.1f, -1}, {2.0f, 0.5f, 0.0f, 0}};
  const int n = 100000;
  uint64_t seed = 100;
  for (const Case& k : cases) {
    SCOPED_TRACE(testing::Message()
                 << "T=" << k.t << " top_p=" << k.p << " min_p=" << k.min_p << " top_k=" << k.k);
    Call c{logits};
    c.params.temperature = k.t;
    c.params.top_p = k.p;
    c.params.min_p = k.min_p;
    c.params.top_k = k.k;
    expect_matches(sample_counts(c, n, seed++), reference_distribution(logits, c.params), n);
  }
}

TEST(Sampler, LargeVocabTopPSupportMatchesOracle) {
  // Peaked 150k-entry row: exercises the pre-sort pruning of the top-p path.
  auto logits = random_logits(150000, 6, 1.0f);
  for (size_t i = 0; i < 40; ++i) logits[i * 997] += 9.0f + 0.1f * float(i);
  Call c{logits};
  c.params.top_p = 0.9f;
  c.params.temperature = 0.8f;
  const auto probs = reference_distribution(logits, c.params);
  const auto counts = sample_counts(c, 500, 22);
  size_t support = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] > 0.0) ++support;
    if (probs[i] == 0.0) {
      EXPECT_EQ(counts[i], 0) << "token " << i;
    }
  }
  EXPECT_GT(support, 5u);
  EXPECT_LT(support, 1000u);
}

TEST(Sampler, MaskedTokensAreNeverSampled) {
  Call c{{kNegInf, 0.0f, kNegInf, 0.0f}};
  auto counts = sample_counts(c, 2000, 23);
  EXPECT_EQ(counts[0] + counts[2], 0);
  c.params.top_p = 0.999f;
  counts = sample_counts(c, 2000, 24);
  EXPECT_EQ(counts[0] + counts[2], 0);
}

// ---- rng and seeds ----

TEST(RequestRng, UniformIsInUnitIntervalWithMeanHalf) {
  RequestRng rng(42);
  double sum = 0.0;
  const int n = 1000000;
  for (int i = 0; i < n; ++i) {
    double u = rng.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / n, 0.5, 0.002);
}

TEST(Sampler, SameSeedSameTokensDifferentSeedsDiffer) {
  Call c{random_logits(1000, 8, 0.5f)};
  auto run = [&](uint64_t seed) {
    SamplingParams p = c.params;
    p.seed = seed;
    RequestRng rng = RequestRng::for_request(p, /*engine_seed=*/999);
    std::vector<int32_t> tokens;
    for (int i = 0; i < 64; ++i) tokens.push_back(sample_once(c, rng).token);
    return tokens;
  };
  EXPECT_EQ(run(1234), run(1234));
  EXPECT_NE(run(1234), run(1235));
  // Without a request seed the engine's seed is used.
  RequestRng a = RequestRng::for_request(SamplingParams{}, 77);
  RequestRng b(77);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(a.next_u64(), b.next_u64());
}

// ---- penalties (hand-computed; greedy flips exactly where the arithmetic says) ----

TEST(Sampler, RepetitionPenaltyDividesPositiveLogits) {
  Call c{{2.0f, 1.1f}};
  c.prompt = {0};
  c.params.repetition_penalty = 2.0f;  // 2.0 / 2 = 1.0 < 1.1
  EXPECT_EQ(greedy(c), 1);
  c.params.repetition_penalty = 1.7f;  // 2.0 / 1.7 = 1.176 > 1.1
  EXPECT_EQ(greedy(c), 0);
  // Applied once per token, however often it occurs: 3.0 / 1.5 = 2.0 > 1.9 (not 0.89).
  c.logits = {3.0f, 1.9f};
  c.prompt = {0, 0, 0};
  c.output = {0};
  c.params.repetition_penalty = 1.5f;
  EXPECT_EQ(greedy(c), 0);
}

TEST(Sampler, RepetitionPenaltyMultipliesNegativeLogits) {
  Call c{{-1.0f, -1.5f}};
  c.output = {0};                      // output tokens count as well as prompt tokens
  c.params.repetition_penalty = 1.4f;  // -1.4 > -1.5
  EXPECT_EQ(greedy(c), 0);
  c.params.repetition_penalty = 1.6f;  // -1.6 < -1.5
  EXPECT_EQ(greedy(c), 1);
  // A penalty below 1 rewards: -1.5 * 0.5 = -0.75 > -1.0.
  c.output = {1};
  c.params.repetition_penalty = 0.5f;
  EXPECT_EQ(greedy(c), 1);
}

TEST(Sampler, FrequencyPenaltyScalesWithCount) {
  Call c{{3.0f, 2.0f}};
  c.output = {0, 1, 0};               // id 0 twice, id 1 once
  c.params.frequency_penalty = 0.4f;  // 3 - 0.8 = 2.2 vs 2 - 0.4 = 1.6
  EXPECT_EQ(greedy(c), 0);
  c.params.frequency_penalty = 1.1f;  // 3 - 2.2 = 0.8 vs 2 - 1.1 = 0.9
  EXPECT_EQ(greedy(c), 1);
}

TEST(Sampler, PresencePenaltyCountsOnceAndOnlyOutput) {
  Call c{{3.0f, 2.0f}};
  c.output = {0, 0, 0};
  c.params.presence_penalty = 0.9f;  // 2.1 > 2.0
  EXPECT_EQ(greedy(c), 0);
  c.params.presence_penalty = 1.1f;  // 1.9 < 2.0
  EXPECT_EQ(greedy(c), 1);
  // Prompt tokens are not output tokens.
  c.output.clear();
  c.prompt = {0, 0};
  c.params.presence_penalty = 2.0f;
  c.params.frequency_penalty = 2.0f;
  EXPECT_EQ(greedy(c), 0);
}

TEST(Sampler, PenaltiesCombineInVllmOrder) {
  // id 0: 4.0 in prompt and output (x2): 4 / 2 = 2, then - 2 * 0.25 - 0.5 = 1.0 vs id 1 at 1.05.
  Call c{{4.0f, 1.05f, 0.0f}};
  c.prompt = {0};
  c.output = {0, 0};
  c.params.repetition_penalty = 2.0f;
  c.params.frequency_penalty = 0.25f;
  c.params.presence_penalty = 0.5f;
  EXPECT_EQ(greedy(c), 1);
  c.logits[1] = 0.95f;
  EXPECT_EQ(greedy(c), 0);
  // The sampled distribution follows the penalised logits {1.0, 0.95, 0.0}.
  c.params.temperature = 1.0f;
  const int n = 100000;
  expect_matches(sample_counts(c, n, 30), reference_distribution({1.0f, 0.95f, 0.0f}, {}), n);
}

TEST(Sampler, ScratchIsReusableAcrossPenaltyCalls) {
  // Garbage in the scratch must not leak into the penalty bookkeeping.
  Call c{{3.0f, 2.0f, 1.0f}};
  c.output = {0};
  c.params.temperature = 0.0f;
  c.params.presence_penalty = 1.5f;  // 1.5 < 2.0
  std::vector<float> scratch(100, 123.0f);
  RequestRng rng(1);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(sample_token(c.input(), rng, scratch).token, 1);
}

// ---- min_tokens ----

TEST(Sampler, MinTokensBlocksEosAndStopTokenIds) {
  Call c{{0.0f, 1.0f, 100.0f, 50.0f}};
  c.eos = {2};
  c.params.stop_token_ids = {3};
  c.params.min_tokens = 3;
  c.params.max_tokens = 10;
  c.output = {1, 1};
  EXPECT_EQ(greedy(c), 1);
  auto counts = sample_counts(c, 2000, 31);
  EXPECT_EQ(counts[2] + counts[3], 0);
  // ignore_eos does not lift the mask.
  c.params.ignore_eos = true;
  EXPECT_EQ(greedy(c), 1);
  c.params.ignore_eos = false;
  // Once min_tokens are out, EOS is back.
  c.output = {1, 1, 1};
  EXPECT_EQ(greedy(c), 2);
  // Out-of-vocab stop ids are harmless.
  c.output = {1};
  c.params.stop_token_ids = {3, 5000};
  EXPECT_EQ(greedy(c), 1);
}

// ---- logprobs ----

std::vector<double> log_softmax_double(const std::vector<float>& logits) {
  double m = *std::max_element(logits.begin(), logits.end());
  double s = 0.0;
  for (float l : logits) s += std::exp(double(l) - m);
  std::vector<double> out;
  for (float l : logits) out.push_back(double(l) - m - std::log(s));
  return out;
}

TEST(LogSoftmax, MatchesDoubleReference) {
  for (float scale : {0.1f, 3.0f, 30.0f}) {
    auto logits = random_logits(150000, 9, scale);
    for (float& l : logits) l += 1000.0f;  // max subtraction is what keeps this finite
    std::vector<float> out(logits.size());
    log_softmax(logits, out);
    auto ref = log_softmax_double(logits);
    // A few float roundings of values of size |ref|, nothing that grows with the vocab.
    double worst = 0.0;
    for (size_t i = 0; i < out.size(); ++i) {
      worst = std::max(worst, std::fabs(out[i] - ref[i]) / (1.0 + std::fabs(ref[i])));
    }
    EXPECT_LT(worst, 5e-7) << "scale " << scale;
  }
  std::vector<float> logits = {kNegInf, 0.0f, 0.0f};
  std::vector<float> out(3);
  log_softmax(logits, out);
  EXPECT_EQ(out[0], kNegInf);
  EXPECT_NEAR(out[1], std::log(0.5), 1e-7);
}

TEST(LogSoftmax, RejectsBadRows) {
  std::vector<float> out(2);
  std::vector<float> nan_row = {0.0f, std::nanf("")};
  EXPECT_THROW(log_softmax(nan_row, out), Error);
  std::vector<float> dead = {kNegInf, kNegInf};
  EXPECT_THROW(log_softmax(dead, out), Error);
  std::vector<float> short_out(1);
  std::vector<float> row = {0.0f, 1.0f};
  EXPECT_THROW(log_softmax(row, short_out), Error);
}

TEST(TopLogprobs, BestFirstTiesByLowerId) {
  std::vector<float> row = {-3.0f, -1.0f, -2.0f, -1.0f, -0.5f, -2.0f};
  auto r = top_logprobs(row, 5, 4);
  EXPECT_EQ(r.token, 5);
  EXPECT_EQ(r.logprob, -2.0f);
  std::vector<std::pair<int32_t, float>> want = {{4, -0.5f}, {1, -1.0f}, {3, -1.0f}, {2, -2.0f}};
  EXPECT_EQ(r.top, want);
  EXPECT_TRUE(top_logprobs(row, 0, 0).top.empty());
  EXPECT_EQ(top_logprobs(row, 0, 20).top.size(), row.size());
  EXPECT_THROW(top_logprobs(row, 0, 21), Error);
  EXPECT_THROW(top_logprobs(row, 6, 1), Error);
}

TEST(Sampler, LogprobsAreOfTheRawDistribution) {
  Call c{random_logits(5000, 10, 2.0f)};
  c.params.logprobs = 5;
  // Processing that changes the sampling distribution must not change reported logprobs.
  c.params.temperature = 0.6f;
  c.params.top_k = 50;
  c.params.repetition_penalty = 1.3f;
  c.prompt = {1, 2, 3};
  c.output = {4};
  const auto ref = log_softmax_double(c.logits);
  std::vector<size_t> order(ref.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ref[a] > ref[b]; });
  RequestRng rng(3);
  for (int it = 0; it < 10; ++it) {
    auto out = sample_once(c, rng);
    ASSERT_TRUE(out.logprobs);
    EXPECT_EQ(out.logprobs->token, out.token);
    EXPECT_NEAR(out.logprobs->logprob, ref[size_t(out.token)], 1e-4);
    ASSERT_EQ(out.logprobs->top.size(), 5u);
    for (size_t r = 0; r < 5; ++r) {
      EXPECT_EQ(out.logprobs->top[r].first, int32_t(order[r]));
      EXPECT_NEAR(out.logprobs->top[r].second, ref[order[r]], 1e-4);
    }
  }
  c.params.logprobs.reset();
  EXPECT_FALSE(sample_once(c, rng).logprobs);
  c.params.logprobs = 0;
  auto out = sample_once(c, rng);
  ASSERT_TRUE(out.logprobs);
  EXPECT_TRUE(out.logprobs->top.empty());
}

// ---- sampler errors ----

TEST(Sampler, ErrorsAreReported) {
  RequestRng rng(1);
  Call nan_call{{0.0f, std::nanf(""), 1.0f}};
  try {
    sample_once(nan_call, rng);
    FAIL() << "NaN logit accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token 1 is NaN"), std::string::npos) << e.what();
  }
  Call all_masked{{kNegInf, kNegInf}};
  EXPECT_THROW(sample_once(all_masked, rng), Error);
  all_masked.params.temperature = 0.0f;
  EXPECT_THROW(sample_once(all_masked, rng), Error);
  all_masked.params.temperature = 1.0f;
  all_masked.params.top_k = 1;
  EXPECT_THROW(sample_once(all_masked, rng), Error);
  Call bad_id{{0.0f, 1.0f}};
  bad_id.output = {7};
  bad_id.params.frequency_penalty = 0.5f;
  try {
    sample_once(bad_id, rng);
    FAIL() << "out-of-vocab id accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("output token id 7"), std::string::npos) << e.what();
  }
}

// The greedy path of an unrestricted request reads the row in place (one pass for the maximum
// and the NaN check); it must pick what the general path picks. A zero logit_bias changes no
// value but takes the general path (copy, restrictions, argmax), so it is the reference. Rows of
// every length around the 4-lane blocks, with ties, -inf and repeated maxima anywhere.
TEST(Sampler, GreedyInPlaceEqualsTheGeneralPath) {
  std::mt19937 gen(11);
  for (size_t n : {1u, 2u, 3u, 4u, 5u, 7u, 8u, 9u, 13u, 31u, 64u, 1000u, 49155u}) {
    for (int trial = 0; trial < 40; ++trial) {
      std::vector<float> row(n);
      // Few distinct values, so ties of the maximum are common and fall in any lane.
      std::uniform_int_distribution<int> value(-3, 3), kind(0, 9);
      for (float& v : row) v = kind(gen) == 0 ? kNegInf : float(value(gen));
      row[gen() % n] = float(value(gen));  // at least one token is not masked
      if (trial % 5 == 0) std::fill(row.begin(), row.end(), kNegInf), row[gen() % n] = -7.0f;
      Call fast{row};
      fast.params.temperature = 0.0f;
      if (trial % 3) fast.params.logprobs = int32_t(trial % 3);
      Call general = fast;
      general.params.logit_bias = {{0, 0.0f}};
      RequestRng r1(1), r2(1);
      const SampleOutput a = sample_once(fast, r1), b = sample_once(general, r2);
      const int32_t first_max = int32_t(std::max_element(row.begin(), row.end()) - row.begin());
      ASSERT_EQ(a.token, first_max) << "n " << n << " trial " << trial;
      ASSERT_EQ(a.token, b.token) << "n " << n << " trial " << trial;
      ASSERT_EQ(a.logprobs.has_value(), b.logprobs.has_value());
      if (a.logprobs) {
        EXPECT_EQ(a.logprobs->logprob, b.logprobs->logprob);
        ASSERT_EQ(a.logprobs->top.size(), b.logprobs->top.size());
        for (size_t k = 0; k < a.logprobs->top.size(); ++k)
          EXPECT_EQ(a.logprobs->top[k], b.logprobs->top[k]);
      }
    }
  }
}

// A NaN anywhere in an unrestricted greedy row is reported with its token, as on every path.
TEST(Sampler, GreedyInPlaceReportsANaNAnywhere) {
  for (size_t n : {1u, 3u, 4u, 6u, 17u, 1024u}) {
    for (size_t at : {size_t(0), n / 2, n - 1}) {
      std::vector<float> row(n, 1.0f);
      row[at] = std::nanf("");
      Call c{row};
      c.params.temperature = 0.0f;
      RequestRng rng(1);
      try {
        sample_once(c, rng);
        FAIL() << "NaN at " << at << " of " << n << " accepted";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("token " + std::to_string(at) + " is NaN"),
                  std::string::npos)
            << e.what();
      }
    }
  }
  Call all_masked{std::vector<float>(9, kNegInf)};
  all_masked.params.temperature = 0.0f;
  RequestRng rng(1);
  EXPECT_THROW(sample_once(all_masked, rng), Error);
}

// ---- validate() ----

TEST(SamplingParams, DefaultsAreValid) { EXPECT_NO_THROW(SamplingParams{}.validate()); }

TEST(SamplingParams, ValidateNamesFieldAndValue) {
  struct Bad {
    std::function<void(SamplingParams&)> set;
    std::string field, value;
  };
  const float nan = std::nanf("");
  const std::vector<Bad> cases = {
      {[](auto& p) { p.temperature = -0.5f; }, "temperature", "-0.5"},
      {[&](auto& p) { p.temperature = nan; }, "temperature", "nan"},
      {[](auto& p) { p.top_p = 0.0f; }, "top_p", "0"},
      {[](auto& p) { p.top_p = 1.5f; }, "top_p", "1.5"},
      {[](auto& p) { p.top_k = -2; }, "top_k", "-2"},
      {[](auto& p) { p.min_p = -0.1f; }, "min_p", "-0.1"},
      {[](auto& p) { p.min_p = 1.1f; }, "min_p", "1.1"},
      {[](auto& p) { p.max_tokens = 0; }, "max_tokens", "0"},
      {[](auto& p) { p.min_tokens = -1; }, "min_tokens", "-1"},
      {[](auto& p) { p.min_tokens = 17; }, "min_tokens", "17"},
      {[](auto& p) { p.repetition_penalty = 0.0f; }, "repetition_penalty", "0"},
      {[](auto& p) { p.presence_penalty = 2.5f; }, "presence_penalty", "2.5"},
      {[](auto& p) { p.presence_penalty = -2.5f; }, "presence_penalty", "-2.5"},
      {[](auto& p) { p.frequency_penalty = 3.0f; }, "frequency_penalty", "3"},
      {[](auto& p) { p.frequency_penalty = -2.01f; }, "frequency_penalty", "-2.01"},
      {[](auto& p) { p.logprobs = -1; }, "logprobs", "-1"},
      {[](auto& p) { p.logprobs = 21; }, "logprobs", "21"},
      {[](auto& p) { p.prompt_logprobs = 21; }, "prompt_logprobs", "21"},
      {[](auto& p) {
         p.stop = {"ok", ""};
       },
       "stop[1]", "empty"},
      {[](auto& p) {
         p.stop_token_ids = {3, -4};
       },
       "stop_token_ids[1]", "-4"},
  };
  for (const Bad& b : cases) {
    SamplingParams p;
    b.set(p);
    try {
      p.validate();
      ADD_FAILURE() << "accepted bad " << b.field;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("'" + b.field + "'"), std::string::npos) << msg;
      EXPECT_NE(msg.find(b.value), std::string::npos) << msg;
    }
  }
  SamplingParams edge;
  edge.temperature = 0.0f;
  edge.top_p = 1.0f;
  edge.top_k = 0;
  edge.min_p = 1.0f;
  edge.min_tokens = edge.max_tokens;
  edge.presence_penalty = -2.0f;
  edge.frequency_penalty = 2.0f;
  edge.logprobs = 20;
  edge.prompt_logprobs = 0;
  EXPECT_NO_THROW(edge.validate());
}

// ---- JSON ----

TEST(SamplingParamsJson, ReadsEveryField) {
  auto j = nlohmann::json::parse(R"({
    "max_tokens": 100, "min_tokens": 5, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
    "min_p": 0.05, "seed": 1234, "stop": ["\n\n", "END"], "stop_token_ids": [7, 8],
    "ignore_eos": true, "include_stop_str_in_output": true, "logprobs": 3, "prompt_logprobs": 2,
    "repetition_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": -0.5,
    "skip_special_tokens": false, "n": 1, "model": "ignored"
  })");
  SamplingParams p = sampling_params_from_json(j, {});
  EXPECT_EQ(p.max_tokens, 100);
  EXPECT_EQ(p.min_tokens, 5);
  EXPECT_FLOAT_EQ(p.temperature, 0.7f);
  EXPECT_FLOAT_EQ(p.top_p, 0.9f);
  EXPECT_EQ(p.top_k, 40);
  EXPECT_FLOAT_EQ(p.min_p, 0.05f);
  EXPECT_EQ(p.seed, 1234u);
  EXPECT_EQ(p.stop, (std::vector<std::string>{"\n\n", "END"}));
  EXPECT_EQ(p.stop_token_ids, (std::vector<int32_t>{7, 8}));
  EXPECT_TRUE(p.ignore_eos);
  EXPECT_TRUE(p.include_stop_str_in_output);
  EXPECT_EQ(p.logprobs, 3);
  EXPECT_EQ(p.prompt_logprobs, 2);
  EXPECT_FLOAT_EQ(p.repetition_penalty, 1.1f);
  EXPECT_FLOAT_EQ(p.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(p.frequency_penalty, -0.5f);
  EXPECT_FALSE(p.skip_special_tokens);
}

TEST(SamplingParamsJson, DefaultsStringStopAndNulls) {
  SamplingParams defaults;
  defaults.max_tokens = 256;
  defaults.temperature = 0.3f;
  defaults.seed = 5;
  defaults.logprobs = 2;
  auto p = sampling_params_from_json(nlohmann::json::object(), defaults);
  EXPECT_EQ(p.max_tokens, 256);
  EXPECT_FLOAT_EQ(p.temperature, 0.3f);
  EXPECT_EQ(p.seed, 5u);

  p = sampling_params_from_json(
      nlohmann::json::parse(R"({"stop": "###", "max_tokens": null, "seed": null,
                                "logprobs": null, "temperature": 0})"),
      defaults);
  EXPECT_EQ(p.stop, std::vector<std::string>{"###"});
  EXPECT_EQ(p.max_tokens, 256);
  EXPECT_FALSE(p.seed);
  EXPECT_FALSE(p.logprobs);
  EXPECT_EQ(p.temperature, 0.0f);  // an integer is a fine number

  // Seeds are opaque 64-bit values.
  p = sampling_params_from_json(nlohmann::json::parse(R"({"seed": 18446744073709551615})"), {});
  EXPECT_EQ(p.seed, UINT64_MAX);
  p = sampling_params_from_json(nlohmann::json::parse(R"({"seed": -1})"), {});
  EXPECT_EQ(p.seed, UINT64_MAX);
}

TEST(SamplingParamsJson, WrongTypesNameTheField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"top_p": "0.9"})", "field 'top_p' must be a number, got string"},
      {R"({"temperature": true})", "field 'temperature' must be a number, got boolean"},
      {R"({"min_p": [0.1]})", "field 'min_p' must be a number, got array"},
      {R"({"repetition_penalty": {}})", "field 'repetition_penalty' must be a number, got object"},
      {R"({"presence_penalty": "x"})", "field 'presence_penalty' must be a number"},
      {R"({"frequency_penalty": false})", "field 'frequency_penalty' must be a number"},
      {R"({"max_tokens": 1.5})", "field 'max_tokens' must be an integer, got number"},
      {R"({"max_tokens": 4294967296})", "field 'max_tokens' is out of range"},
      {R"({"min_tokens": "3"})", "field 'min_tokens' must be an integer, got string"},
      {R"({"top_k": 2.0})", "field 'top_k' must be an integer"},
      {R"({"seed": 1.5})", "field 'seed' must be an integer, got number"},
      {R"({"seed": "42"})", "field 'seed' must be an integer, got string"},
      {R"({"stop": 5})", "field 'stop' must be a string or a list of strings, got number"},
      {R"({"stop": ["a", 1]})", "field 'stop[1]' must be a string, got number"},
      {R"({"stop_token_ids": 3})", "field 'stop_token_ids' must be a list of integers"},
      {R"({"stop_token_ids": [1, "2"]})", "field 'stop_token_ids[1]' must be an integer"},
      {R"({"ignore_eos": 1})", "field 'ignore_eos' must be a boolean, got number"},
      {R"({"include_stop_str_in_output": "yes"})",
       "field 'include_stop_str_in_output' must be a boolean"},
      {R"({"skip_special_tokens": null, "logprobs": true})",
       "field 'logprobs' must be an integer, got boolean"},
      {R"({"prompt_logprobs": 1.0})", "field 'prompt_logprobs' must be an integer"},
      {R"({"skip_special_tokens": 0})", "field 'skip_special_tokens' must be a boolean"},
      {R"({"top_p": 1e300})", "field 'top_p' is out of range"},
      // Values of the right type still go through validate().
      {R"({"top_p": 1.5})", "field 'top_p' must be in (0, 1], got 1.5"},
      {R"({"stop": [""]})", "field 'stop[0]' must not be an empty string"},
      {R"({"logprobs": 25})", "field 'logprobs' must be in [0, 20], got 25"},
      {R"([1, 2])", "sampling params must be a JSON object, got array"},
  };
  for (const auto& [text, want] : cases) {
    try {
      sampling_params_from_json(nlohmann::json::parse(text), {});
      ADD_FAILURE() << "accepted " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << text << " -> " << e.what();
    }
  }
}

}  // namespace
}  // namespace relayllm
