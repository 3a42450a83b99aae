// Automatic relay groups keep attention exact: on random prefix trees of depth 1-3
// (system prompt, documents, few-shot parts, questions; lengths block-aligned or not),
// with random arrivals and finishes, n > 1 copies of a prompt, a prompt_logprobs
// request, a KV pool small enough to preempt and evict, and chunked prefill, relay on
// gives the tokens and logits of relay off and of a roomy run without any sharing, on
// every architecture. A registered prefix may hold automatic groups inside it.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "../common/generation_compare.h"
#include "tiny_models.h"

namespace relayllm {
namespace {

struct Request {
  std::vector<int32_t> prompt;
  int32_t arrival_step = 0;
  int32_t max_tokens = 4;
  bool prompt_logprobs = false;
};

struct Tree {
  std::vector<int32_t> system;
  std::vector<Request> requests;
};

Tree random_tree(uint64_t seed, int depth) {
  std::mt19937_64 rng(seed);
  auto tokens = [&](int lo, int hi) {
    std::vector<int32_t> t(static_cast<size_t>(lo + int(rng() % uint64_t(hi - lo + 1))));
    for (auto& x : t) x = int32_t(rng() % 256);
    return t;
  };
  auto cat = [](std::vector<int32_t> a, const std::vector<int32_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  Tree tree;
  // Block size 4: a length that is a multiple of 4 ends on a block boundary.
  tree.system = rng() % 2 ? tokens(16, 16) : tokens(9, 30);
  std::vector<std::vector<int32_t>> stems{tree.system};
  for (int level = 1; level < depth; ++level) {
    std::vector<std::vector<int32_t>> next;
    for (const auto& stem : stems) {
      const int children = 2 + int(rng() % 2);
      for (int c = 0; c < children; ++c) next.push_back(cat(stem, tokens(9, 24)));
    }
    stems = next;
  }
  for (const auto& stem : stems) {
    const int questions = 2 + int(rng() % 2);
    for (int q = 0; q < questions; ++q) {
      Request r;
      r.prompt = cat(stem, tokens(1, 8));
      r.arrival_step = int32_t(rng() % 4);
      r.max_tokens = 4 + int32_t(rng() % 9);
      const int copies = rng() % 4 == 0 ? 3 : 1;  // n > 1: the same prompt several times
      for (int k = 0; k < copies; ++k) tree.requests.push_back(r);
    }
  }
  tree.requests[rng() % tree.requests.size()].prompt_logprobs = true;
  return tree;
}

struct RunResult {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<std::vector<float>>> logits;
  std::vector<size_t> prompt_logprobs;
  SchedulerStats scheduler;
  EngineStats engine;
};

struct Mode {
  bool relay = false;
  bool caching = true;
  bool register_system = false;
  int32_t blocks = 4096;
  int32_t budget = 4096;
};

RunResult run(const std::string& arch, const Tree& tree, const Mode& mode) {
  EngineConfig config;
  config.block_size = 4;
  config.num_kv_blocks = mode.blocks;
  config.scheduler.max_num_batched_tokens = mode.budget;
  config.scheduler.enable_prefix_caching = mode.caching;
  config.enable_relay_attention = mode.relay;
  config.capture_logits = true;
  auto engine = testing::make_tiny_engine(arch, config);
  if (mode.register_system) engine->register_prefix("system", tree.system);
  std::vector<int64_t> ids(tree.requests.size(), -1);
  size_t added = 0;
  for (int32_t step = 0; (added < ids.size() || engine->has_unfinished()) && step < 100000;
       ++step) {
    for (size_t i = 0; i < ids.size(); ++i) {
      const Request& r = tree.requests[i];
      if (ids[i] >= 0 || r.arrival_step > step) continue;
      SamplingParams params;
      params.temperature = 0;
      params.max_tokens = r.max_tokens;
      params.ignore_eos = true;
      if (r.prompt_logprobs) params.prompt_logprobs = 1;
      ids[i] = engine->add_request(r.prompt, params);
      ++added;
    }
    engine->step();
  }
  EXPECT_FALSE(engine->has_unfinished());
  RunResult result;
  for (int64_t id : ids) {
    const Sequence* seq = engine->find(id);
    EXPECT_EQ(seq->finish_reason, "length");
    result.tokens.push_back(seq->output_ids);
    result.logits.push_back(seq->captured_logits);
    result.prompt_logprobs.push_back(seq->prompt_logprobs.size());
  }
  result.scheduler = engine->scheduler_stats();
  result.engine = engine->stats();
  engine->block_pool().check_consistency();
  return result;
}

void expect_same(const RunResult& a, const RunResult& b, const std::string& what) {
  ASSERT_EQ(a.prompt_logprobs.size(), b.prompt_logprobs.size()) << what;
  for (size_t r = 0; r < a.prompt_logprobs.size(); ++r)
    EXPECT_EQ(a.prompt_logprobs[r], b.prompt_logprobs[r]) << what << ", request " << r;
  testing::expect_same_generations(a, b, 2e-5, what);
}

class AutoRelayEquivalence : public ::testing::TestWithParam<std::string> {};

TEST_P(AutoRelayEquivalence, RandomPrefixTreesUnderPressure) {
  const std::string arch = GetParam();
  int32_t deepest = 0;
  int64_t preemptions = 0, chunked = 0, waits = 0;
  for (int depth = 1; depth <= 3; ++depth) {
    const Tree tree = random_tree(1000 + uint64_t(depth) * 17 + arch.size(), depth);
    const std::string what = arch + " depth " + std::to_string(depth);
    // Reference: no sharing of any kind, no pressure.
    const RunResult reference = run(arch, tree, {false, false, false, 4096, 4096});
    const RunResult roomy = run(arch, tree, {true, true, false, 4096, 4096});
    EXPECT_GT(roomy.engine.relay_auto_groups, 0) << what;
    if (depth >= 2) EXPECT_GE(roomy.engine.max_relay_depth, 2) << what;
    deepest = std::max(deepest, roomy.engine.max_relay_depth);
    expect_same(roomy, reference, what + " relay on (roomy) vs reference");

    // A pool and budget small enough to preempt, evict cached blocks and chunk.
    const Mode off{false, true, false, 36, 16};
    Mode on = off;
    on.relay = true;
    const RunResult squeezed_off = run(arch, tree, off);
    const RunResult squeezed_on = run(arch, tree, on);
    EXPECT_EQ(squeezed_on.scheduler.num_preemptions, squeezed_off.scheduler.num_preemptions);
    preemptions += squeezed_on.scheduler.num_preemptions;
    chunked += squeezed_on.scheduler.num_chunked_prefills;
    waits += squeezed_on.scheduler.shared_block_waits;
    expect_same(squeezed_off, reference, what + " relay off (pressure) vs reference");
    expect_same(squeezed_on, reference, what + " relay on (pressure) vs reference");

    // The system prompt registered: a pinned group with automatic groups inside.
    const RunResult pinned = run(arch, tree, {true, true, true, 4096, 4096});
    EXPECT_GT(pinned.engine.relay_attached_requests, 0) << what;
    if (depth >= 2) EXPECT_GE(pinned.engine.max_relay_depth, 2) << what;
    expect_same(pinned, reference, what + " registered system + automatic vs reference");
  }
  EXPECT_GE(deepest, 3) << arch;
  EXPECT_GT(preemptions, 0) << arch;
  EXPECT_GT(chunked, 0) << arch;
  EXPECT_GT(waits, 0) << arch;
}

INSTANTIATE_TEST_SUITE_P(AllArchitectures, AutoRelayEquivalence,
                         ::testing::ValuesIn(testing::tiny_architectures()));

TEST(AutoRelay, RelayPrefixTokensCountEveryLevel) {
  // Two requests over a 12-token system prompt (registered) and a shared 8-token
  // document: once both decode, each reads 12 + 8 tokens through relay groups.
  std::vector<int32_t> system(12), doc(8);
  for (size_t i = 0; i < system.size(); ++i) system[i] = int32_t(10 + i);
  for (size_t i = 0; i < doc.size(); ++i) doc[i] = int32_t(60 + i);
  EngineConfig config;
  config.block_size = 4;
  config.num_kv_blocks = 256;
  config.enable_relay_attention = true;
  auto engine = testing::make_tiny_engine("llama2", config);
  engine->register_prefix("system", system);
  SamplingParams params;
  params.temperature = 0;
  params.max_tokens = 12;
  params.ignore_eos = true;
  std::vector<int64_t> ids;
  for (int32_t q : {200, 201}) {
    std::vector<int32_t> p = system;
    p.insert(p.end(), doc.begin(), doc.end());
    p.push_back(q);
    ids.push_back(engine->add_request(p, params));
  }
  int32_t deepest = 0;
  while (engine->has_unfinished()) {
    engine->step();
    deepest = std::max(deepest, engine->stats().last_step_relay_depth);
  }
  EXPECT_EQ(deepest, 2);
  for (int64_t id : ids) EXPECT_EQ(engine->find(id)->relay_prefix_tokens, 12 + 8);
  EXPECT_GT(engine->stats().relay_kv_rows_saved, 0);
}

}  // namespace
}  // namespace relayllm
