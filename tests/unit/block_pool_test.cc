// Block accounting: reference counts, LRU reuse of cached blocks, and a random
// walk of thousands of engine operations that must leave no block behind.
#include "relayllm/kv/block_pool.h"

#include <gtest/gtest.h>

#include <random>

#include "relayllm/common/error.h"
#include "tiny_models.h"

namespace relayllm {
namespace {

TEST(BlockPool, AllocatesReleasesAndCountsReferences) {
  BlockPool pool(4, 16);
  auto a = pool.allocate(), b = pool.allocate();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(pool.num_free(), 2);
  pool.retain(*a);
  pool.release(*a);
  EXPECT_EQ(pool.ref_count(*a), 1);
  pool.release(*a);
  pool.release(*b);
  EXPECT_EQ(pool.num_free(), 4);
  EXPECT_THROW(pool.release(*a), Error);
  pool.check_consistency();
}

TEST(BlockPool, RunsOutAndRecovers) {
  BlockPool pool(2, 4);
  auto a = pool.allocate(), b = pool.allocate();
  EXPECT_FALSE(pool.allocate().has_value());
  pool.release(*a);
  EXPECT_EQ(pool.allocate(), a);
  pool.release(*a);
  pool.release(*b);
  pool.check_consistency();
}

TEST(BlockPool, CachedBlocksAreReusedUntilEvicted) {
  BlockPool pool(3, 4);
  std::vector<int32_t> tokens = {1, 2, 3, 4};
  uint64_t hash = chain_block_hash(0, tokens);
  EXPECT_NE(hash, chain_block_hash(1, tokens));  // the parent matters
  int32_t block = *pool.allocate();
  pool.mark_cached(block, hash);
  pool.release(block);
  EXPECT_EQ(pool.num_free(), 3);  // cached but unreferenced blocks count as free
  EXPECT_EQ(pool.take_cached(hash), block);
  EXPECT_EQ(pool.num_free(), 2);
  pool.release(block);
  // LRU: the two never-used blocks go first, then the cached one is evicted.
  auto x = pool.allocate(), y = pool.allocate();
  EXPECT_TRUE(pool.is_cached(hash));
  auto z = pool.allocate();
  EXPECT_EQ(z, block);
  EXPECT_FALSE(pool.is_cached(hash));
  for (auto b : {x, y, z}) pool.release(*b);
  pool.check_consistency();
}

// Thousands of random adds, steps, aborts and releases on a small pool (so
// preemption is frequent), with relay prefixes and prefix caching on: at the
// end every block is free except the prefixes' own.
TEST(BlockPool, RandomEngineWalkLeaksNothing) {
  for (bool relay : {false, true}) {
    EngineConfig config;
    config.block_size = 4;
    config.num_kv_blocks = 40;
    config.scheduler.max_num_batched_tokens = 24;
    config.scheduler.max_num_seqs = 6;
    config.scheduler.enable_prefix_caching = true;
    config.enable_relay_attention = relay;
    auto engine = testing::make_tiny_engine("llama2", config);
    std::mt19937_64 rng(relay ? 11 : 12);
    std::vector<int32_t> shared(13);
    for (auto& t : shared) t = int32_t(rng() % 256);
    int32_t prefix_blocks = 0;
    if (relay) prefix_blocks = int32_t(engine->register_prefix("p", shared).blocks.size());
    std::vector<int64_t> live;
    int64_t preemptions_seen = 0;
    for (int op = 0; op < 3000; ++op) {
      int choice = int(rng() % 10);
      if (choice < 3) {
        std::vector<int32_t> prompt;
        if (rng() % 2) prompt = shared;
        int own = 1 + int(rng() % 30);
        for (int i = 0; i < own; ++i) prompt.push_back(int32_t(rng() % 256));
        SamplingParams params;
        params.max_tokens = 1 + int(rng() % 12);
        params.temperature = 0.8f;
        params.ignore_eos = true;
        live.push_back(engine->add_request(prompt, params));
      } else if (choice == 3 && !live.empty()) {
        size_t i = rng() % live.size();
        engine->abort(live[i]);
      } else {
        engine->step();
      }
      // Release finished requests now and then, as a server would.
      for (size_t i = 0; i < live.size();) {
        const Sequence* seq = engine->find(live[i]);
        if (seq->finished() && rng() % 2) {
          engine->release(live[i]);
          live[i] = live.back();
          live.pop_back();
        } else {
          ++i;
        }
      }
      if (op % 50 == 0) engine->block_pool().check_consistency();
      preemptions_seen = engine->scheduler_stats().num_preemptions;
    }
    for (int64_t id : live) engine->abort(id);
    while (engine->has_unfinished()) engine->step();
    for (int64_t id : live) engine->release(id);
    engine->block_pool().check_consistency();
    EXPECT_GT(preemptions_seen, 0) << "the walk should exercise preemption";
    EXPECT_EQ(engine->block_pool().num_free(), engine->block_pool().num_blocks() - prefix_blocks);
    if (relay) {
      engine->remove_prefix("p");
      EXPECT_EQ(engine->block_pool().num_free(), engine->block_pool().num_blocks());
    }
  }
}

}  // namespace
}  // namespace relayllm
