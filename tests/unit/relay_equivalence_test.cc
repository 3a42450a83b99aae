// The project's central property: relay attention is an exact rewrite of
// attention, so relay on and relay off give the same logits and greedy tokens,
// on every architecture, in batches mixing prefix groups and prefix-less
// requests, with chunked prefill and preemption happening along the way.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "../common/generation_compare.h"
#include "tiny_models.h"

namespace relayllm {
namespace {

struct Workload {
  std::vector<int32_t> prefix_a, prefix_b;
  std::vector<std::vector<int32_t>> prompts;
};

Workload make_workload(uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto tokens = [&](int n) {
    std::vector<int32_t> t(n);
    for (auto& x : t) x = int32_t(rng() % 256);
    return t;
  };
  Workload w;
  w.prefix_a = tokens(37);  // not a multiple of the block size
  w.prefix_b = tokens(21);
  const int own_lengths[] = {3, 29, 12, 1, 40, 7, 18, 25};
  for (int i = 0; i < 8; ++i) {
    std::vector<int32_t> p;
    if (i % 3 == 0) p = w.prefix_a;
    if (i % 3 == 1) p = w.prefix_b;
    auto own = tokens(own_lengths[i]);
    p.insert(p.end(), own.begin(), own.end());
    w.prompts.push_back(p);
  }
  // A prompt that is a prefix of prefix A plus other tokens: must not attach.
  std::vector<int32_t> partial(w.prefix_a.begin(), w.prefix_a.begin() + 10);
  auto own = tokens(9);
  partial.insert(partial.end(), own.begin(), own.end());
  w.prompts.push_back(partial);
  return w;
}

struct RunResult {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<std::vector<float>>> logits;
  SchedulerStats scheduler;
  EngineStats engine;
};

RunResult run(const std::string& arch, const Workload& w, bool relay, int32_t blocks,
              int32_t budget) {
  EngineConfig config;
  config.block_size = 4;
  config.num_kv_blocks = blocks;
  config.scheduler.max_num_batched_tokens = budget;
  config.enable_relay_attention = relay;
  config.capture_logits = true;
  auto engine = testing::make_tiny_engine(arch, config);
  if (relay) {
    engine->register_prefix("a", w.prefix_a);
    engine->register_prefix("b", w.prefix_b);
  }
  SamplingParams params;
  params.temperature = 0;
  params.max_tokens = 20;
  params.ignore_eos = true;
  std::vector<int64_t> ids;
  for (const auto& p : w.prompts) ids.push_back(engine->add_request(p, params));
  for (int guard = 0; engine->has_unfinished() && guard < 100000; ++guard) engine->step();
  EXPECT_FALSE(engine->has_unfinished());
  RunResult result;
  for (int64_t id : ids) {
    const Sequence* seq = engine->find(id);
    EXPECT_EQ(seq->finish_reason, "length");
    result.tokens.push_back(seq->output_ids);
    result.logits.push_back(seq->captured_logits);
  }
  result.scheduler = engine->scheduler_stats();
  result.engine = engine->stats();
  engine->block_pool().check_consistency();
  return result;
}

void expect_same(const RunResult& a, const RunResult& b, const std::string& what) {
  testing::expect_same_generations(a, b, 2e-5, what);
}

class RelayEquivalence : public ::testing::TestWithParam<std::string> {};

TEST_P(RelayEquivalence, RelayOnEqualsRelayOffUnderPressure) {
  const std::string arch = GetParam();
  Workload w = make_workload(42);
  // Reference: plenty of blocks and budget, so no chunking and no preemption.
  RunResult reference = run(arch, w, /*relay=*/false, 4096, 4096);
  EXPECT_EQ(reference.scheduler.num_preemptions, 0);
  EXPECT_EQ(reference.scheduler.num_chunked_prefills, 0);

  // Small pool and budget: chunked prefill and preemption must actually happen.
  RunResult off = run(arch, w, false, 48, 16);
  RunResult on = run(arch, w, true, 48, 16);
  for (const RunResult* r : {&off, &on}) {
    EXPECT_GT(r->scheduler.num_preemptions, 0);
    EXPECT_GT(r->scheduler.num_chunked_prefills, 0);
  }
  // Six prompts carry a registered prefix; the partial-prefix one must not attach.
  EXPECT_EQ(on.engine.relay_attached_requests, 6);
  EXPECT_EQ(off.engine.relay_attached_requests, 0);

  expect_same(off, reference, arch + " relay off (pressure) vs reference");
  expect_same(on, reference, arch + " relay on (pressure) vs reference");
  // Relay with a roomy pool too: the plain batched path.
  expect_same(run(arch, w, true, 4096, 4096), reference, arch + " relay on vs reference");
}

INSTANTIATE_TEST_SUITE_P(AllArchitectures, RelayEquivalence,
                         ::testing::ValuesIn(testing::tiny_architectures()));

TEST(RelayEquivalence, PrefixCachingMatchesToo) {
  Workload w = make_workload(3);
  RunResult reference = run("llama2", w, false, 4096, 4096);
  EngineConfig config;
  config.block_size = 4;
  config.num_kv_blocks = 4096;
  config.scheduler.enable_prefix_caching = true;
  config.capture_logits = true;
  auto engine = testing::make_tiny_engine("llama2", config);
  SamplingParams params;
  params.temperature = 0;
  params.max_tokens = 20;
  params.ignore_eos = true;
  // Run the workload twice in sequence: the second pass hits the cache.
  for (int pass = 0; pass < 2; ++pass) {
    std::vector<int64_t> ids;
    for (const auto& p : w.prompts) ids.push_back(engine->add_request(p, params));
    while (engine->has_unfinished()) engine->step();
    for (size_t r = 0; r < ids.size(); ++r) {
      EXPECT_EQ(engine->find(ids[r])->output_ids, reference.tokens[r]) << "pass " << pass;
      engine->release(ids[r]);
    }
  }
  EXPECT_GT(engine->scheduler_stats().prefix_cache_hits, 0);
}

}  // namespace
}  // namespace relayllm
