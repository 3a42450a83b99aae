// Requests that arrive together and share leading full blocks compute those
// blocks once (prefix caching on by default): the later ones wait for the blocks
// the first computes, then hit them in the cache. Outputs equal solo runs.
#include <gtest/gtest.h>

#include <random>

#include "tiny_models.h"

namespace relayllm {
namespace {

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng() % 256);
  return t;
}

struct Outcome {
  std::vector<std::vector<int32_t>> tokens;
  int64_t prompt_tokens = 0;
  int64_t waits = 0;
  int64_t preemptions = 0;
};

Outcome run_together(const std::vector<std::vector<int32_t>>& prompts, EngineConfig config,
                     int max_tokens = 6) {
  auto engine = testing::make_tiny_engine("llama2", config);
  SamplingParams params;
  params.temperature = 0;
  params.max_tokens = max_tokens;
  params.ignore_eos = true;
  std::vector<int64_t> ids;
  for (const auto& p : prompts) ids.push_back(engine->add_request(p, params));
  while (engine->has_unfinished()) engine->step();
  Outcome out;
  for (int64_t id : ids) out.tokens.push_back(engine->find(id)->output_ids);
  out.prompt_tokens = engine->stats().prompt_tokens;
  out.waits = engine->scheduler_stats().shared_block_waits;
  out.preemptions = engine->scheduler_stats().num_preemptions;
  engine->block_pool().check_consistency();
  return out;
}

EngineConfig small_config() {
  EngineConfig config;
  config.block_size = 4;
  config.num_kv_blocks = 512;
  return config;
}

TEST(SharedPrefill, PrefixCachingIsOnByDefault) {
  EXPECT_TRUE(SchedulerConfig{}.enable_prefix_caching);
}

TEST(SharedPrefill, TogetherArrivingRequestsComputeSharedBlocksOnce) {
  std::mt19937_64 rng(11);
  const std::vector<int32_t> shared = random_tokens(rng, 26);  // 6 full blocks of 4 and 2 tokens
  for (int n : {2, 8}) {
    std::vector<std::vector<int32_t>> prompts;
    int64_t own_total = 0;
    for (int i = 0; i < n; ++i) {
      std::vector<int32_t> p = shared;
      auto own = random_tokens(rng, 3 + i);
      p.insert(p.end(), own.begin(), own.end());
      own_total += int64_t(p.size()) - 24;
      prompts.push_back(p);
    }
    Outcome together = run_together(prompts, small_config());
    // The 24 tokens of full shared blocks are computed once; the rest by each.
    EXPECT_EQ(together.prompt_tokens, 24 + own_total) << n << " requests";
    EXPECT_GT(together.waits, 0);
    for (int i = 0; i < n; ++i)
      EXPECT_EQ(together.tokens[size_t(i)],
                run_together({prompts[size_t(i)]}, small_config()).tokens[0])
          << "request " << i << " of " << n;

    EngineConfig off = small_config();
    off.scheduler.enable_prefix_caching = false;
    Outcome separate = run_together(prompts, off);
    EXPECT_EQ(separate.prompt_tokens, 24 * n + own_total);
    EXPECT_EQ(separate.tokens, together.tokens);
  }
}

TEST(SharedPrefill, ChunkedSharedPrefillAndPromptLogprobs) {
  // The first request computes the shared blocks over several chunked steps; the others
  // wait the whole time. A prompt_logprobs request computes everything itself.
  std::mt19937_64 rng(5);
  const std::vector<int32_t> shared = random_tokens(rng, 40);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 4; ++i) {
    std::vector<int32_t> p = shared;
    auto own = random_tokens(rng, 5);
    p.insert(p.end(), own.begin(), own.end());
    prompts.push_back(p);
  }
  EngineConfig config = small_config();
  config.scheduler.max_num_batched_tokens = 12;
  Outcome together = run_together(prompts, config);
  EXPECT_EQ(together.prompt_tokens, 40 + 4 * 5);
  for (size_t i = 0; i < prompts.size(); ++i)
    EXPECT_EQ(together.tokens[i], run_together({prompts[i]}, small_config()).tokens[0]);

  auto engine = testing::make_tiny_engine("llama2", small_config());
  SamplingParams params;
  params.temperature = 0;
  params.max_tokens = 2;
  params.ignore_eos = true;
  SamplingParams with_logprobs = params;
  with_logprobs.prompt_logprobs = 1;
  const int64_t a = engine->add_request(prompts[0], params);
  const int64_t b = engine->add_request(prompts[1], with_logprobs);
  while (engine->has_unfinished()) engine->step();
  EXPECT_EQ(engine->find(b)->prompt_logprobs.size(), prompts[1].size());
  EXPECT_EQ(engine->find(b)->num_prefix_cache_hit_tokens, 0);
  EXPECT_EQ(engine->find(a)->output_ids.size(), 2u);
}

TEST(SharedPrefill, PreemptedComputerReleasesItsWaiters) {
  // A pool so small that preemption happens while others wait on shared blocks:
  // nobody waits forever and outputs stay equal to solo runs.
  std::mt19937_64 rng(9);
  const std::vector<int32_t> shared = random_tokens(rng, 17);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> p = shared;
    auto own = random_tokens(rng, 2 + 3 * i);
    p.insert(p.end(), own.begin(), own.end());
    prompts.push_back(p);
  }
  EngineConfig config = small_config();
  config.num_kv_blocks = 14;
  config.scheduler.max_num_batched_tokens = 20;
  Outcome squeezed = run_together(prompts, config, 12);
  EXPECT_GT(squeezed.preemptions, 0);
  EXPECT_GT(squeezed.waits, 0);
  for (size_t i = 0; i < prompts.size(); ++i)
    EXPECT_EQ(squeezed.tokens[i], run_together({prompts[i]}, small_config(), 12).tokens[0])
        << "request " << i;
}

}  // namespace
}  // namespace relayllm
