// The automatic relay planner: on random prefix trees, every group it forms is
// well formed (members hold the same blocks, levels nest and tile each member's
// grouped range) and costs fewer KV bytes than paged attention over the same
// blocks would read; a group of one is never formed.
#include "relayllm/backend/relay_group_planner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

namespace relayllm {
namespace {

struct Tables {
  std::vector<std::vector<int32_t>> blocks;
  std::vector<RelayCandidate> candidates;
};

// Random trees: a root run, children runs under it, grandchildren under those; each
// sequence walks down a random path and ends with blocks of its own. Block ids are
// unique per tree node, so equal ids mean a shared physical block.
Tables random_tables(std::mt19937_64& rng, int32_t max_levels) {
  Tables t;
  int32_t next_block = 0;
  auto run = [&](int n) {
    std::vector<int32_t> r;
    for (int i = 0; i < n; ++i) r.push_back(next_block++);
    return r;
  };
  const int roots = 1 + int(rng() % 3);
  for (int root = 0; root < roots; ++root) {
    const std::vector<int32_t> top = run(int(rng() % 6));
    const int children = 1 + int(rng() % 4);
    for (int c = 0; c < children; ++c) {
      const std::vector<int32_t> mid = run(int(rng() % 5));
      const int grandchildren = 1 + int(rng() % 3);
      for (int g = 0; g < grandchildren; ++g) {
        const std::vector<int32_t> low = run(int(rng() % 4));
        const int seqs = 1 + int(rng() % 4);
        for (int s = 0; s < seqs; ++s) {
          std::vector<int32_t> b = top;
          b.insert(b.end(), mid.begin(), mid.end());
          b.insert(b.end(), low.begin(), low.end());
          const std::vector<int32_t> own = run(1 + int(rng() % 3));
          b.insert(b.end(), own.begin(), own.end());
          t.blocks.push_back(b);
        }
      }
    }
  }
  for (const auto& b : t.blocks) {
    RelayCandidate c;
    // Some sequences may group fewer blocks (their KV is still being computed).
    c.groupable_blocks = rng() % 4 == 0 ? int32_t(rng() % (b.size() + 1)) : int32_t(b.size()) - 1;
    c.query_len = rng() % 3 == 0 ? 1 + int32_t(rng() % 200) : 1;
    c.root = int32_t(rng() % 2) - 1;  // with or without a registered prefix around it
    c.max_levels = max_levels;
    t.candidates.push_back(c);
  }
  for (size_t i = 0; i < t.candidates.size(); ++i) t.candidates[i].blocks = t.blocks[i];
  return t;
}

void check_plan(const Tables& t, const RelayGroupPlan& plan, const RelayCostModel& cost) {
  const auto& c = t.candidates;
  ASSERT_EQ(plan.leaf.size(), c.size());
  for (size_t gi = 0; gi < plan.groups.size(); ++gi) {
    const RelayGroup& g = plan.groups[gi];
    ASSERT_GE(g.members.size(), 2u) << "a group of one is its own range";
    ASSERT_GT(g.num_blocks, 0);
    std::vector<int32_t> q;
    for (int32_t m : g.members) {
      q.push_back(c[size_t(m)].query_len);
      EXPECT_EQ(c[size_t(m)].root, g.root);
      ASSERT_LE(g.first_block + g.num_blocks, c[size_t(m)].groupable_blocks);
      for (int32_t b = 0; b < g.first_block + g.num_blocks; ++b)
        EXPECT_EQ(c[size_t(m)].blocks[size_t(b)], c[size_t(g.members[0])].blocks[size_t(b)])
            << "group " << gi << " member " << m << " block " << b;
    }
    // The cost rule: the group reads fewer KV rows than paged attention over its blocks.
    const int64_t tokens = int64_t(g.num_blocks) * cost.block_size;
    const double paged = cost.paged_rows(tokens, q), relay = cost.relay_rows(tokens, q);
    EXPECT_LT(relay, paged) << "group " << gi << " costs more than it saves";
    EXPECT_DOUBLE_EQ(g.saved_rows, paged - relay);
    if (g.parent >= 0) {
      ASSERT_LT(size_t(g.parent), gi) << "parents come first";
      const RelayGroup& p = plan.groups[size_t(g.parent)];
      EXPECT_EQ(g.first_block, p.first_block + p.num_blocks);
      for (int32_t m : g.members)
        EXPECT_TRUE(std::count(p.members.begin(), p.members.end(), m)) << "child member outside";
    } else {
      EXPECT_EQ(g.first_block, 0);
    }
  }
  for (size_t i = 0; i < c.size(); ++i) {
    // The chain from the leaf tiles [0, own_first_block); the sequence is in each
    // group of its chain and in no other.
    std::set<int32_t> chain;
    int32_t end = plan.own_first_block[i], depth = 0;
    for (int32_t g = plan.leaf[i]; g >= 0; g = plan.groups[size_t(g)].parent, ++depth) {
      const RelayGroup& grp = plan.groups[size_t(g)];
      EXPECT_EQ(grp.first_block + grp.num_blocks, end) << "sequence " << i;
      end = grp.first_block;
      chain.insert(g);
    }
    EXPECT_EQ(end, 0) << "sequence " << i;
    EXPECT_LE(depth, c[i].max_levels);
    EXPECT_LE(plan.own_first_block[i], c[i].groupable_blocks);
    for (size_t g = 0; g < plan.groups.size(); ++g) {
      const auto& members = plan.groups[g].members;
      EXPECT_EQ(bool(std::count(members.begin(), members.end(), int32_t(i))),
                chain.count(int32_t(g)) == 1)
          << "sequence " << i << " group " << g;
    }
  }
}

TEST(RelayGroupPlanner, RandomTreesFormOnlyGroupsThatSaveBytes) {
  std::mt19937_64 rng(2026);
  int formed = 0, nested = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const int32_t levels = trial % 3 == 0 ? 1 : 1 << 20;
    Tables t = random_tables(rng, levels);
    RelayCostModel cost = RelayCostModel::for_shape(trial % 2 ? 16 : 4, 32, trial % 4 < 2 ? 8 : 32,
                                                    128, trial % 5 == 0 ? 4 : 2);
    RelayGroupPlan plan = plan_relay_groups(t.candidates, cost);
    check_plan(t, plan, cost);
    formed += int(plan.groups.size());
    for (const RelayGroup& g : plan.groups) nested += g.parent >= 0;
  }
  EXPECT_GT(formed, 300);
  EXPECT_GT(nested, 100);
}

TEST(RelayGroupPlanner, ThreeLevelTreeOfTheBenchmark) {
  // A system prompt of 64 blocks for all, 8 documents of 128 blocks under 8 requests
  // each, 7 blocks of question each; decode rows. Expect exactly the tree.
  std::vector<std::vector<int32_t>> blocks;
  int32_t next = 0;
  std::vector<int32_t> system;
  for (int i = 0; i < 64; ++i) system.push_back(next++);
  for (int d = 0; d < 8; ++d) {
    std::vector<int32_t> doc;
    for (int i = 0; i < 128; ++i) doc.push_back(next++);
    for (int r = 0; r < 8; ++r) {
      std::vector<int32_t> b = system;
      b.insert(b.end(), doc.begin(), doc.end());
      for (int i = 0; i < 7; ++i) b.push_back(next++);
      blocks.push_back(b);
    }
  }
  std::vector<RelayCandidate> c(blocks.size());
  for (size_t i = 0; i < c.size(); ++i) {
    c[i].blocks = blocks[i];
    c[i].groupable_blocks = int32_t(blocks[i].size());
    c[i].query_len = 1;
  }
  const RelayCostModel cost = RelayCostModel::for_shape(16, 32, 32, 128, 2);
  RelayGroupPlan plan = plan_relay_groups(c, cost);
  ASSERT_EQ(plan.groups.size(), 9u);
  EXPECT_EQ(plan.groups[0].members.size(), 64u);
  EXPECT_EQ(plan.groups[0].num_blocks, 64);
  for (size_t g = 1; g < 9; ++g) {
    EXPECT_EQ(plan.groups[g].parent, 0);
    EXPECT_EQ(plan.groups[g].members.size(), 8u);
    EXPECT_EQ(plan.groups[g].num_blocks, 128);
  }
  for (size_t i = 0; i < c.size(); ++i) EXPECT_EQ(plan.own_first_block[i], 64 + 128);
  // One level only (a backend that takes one): the system prompt's group alone.
  for (auto& x : c) x.max_levels = 1;
  plan = plan_relay_groups(c, cost);
  ASSERT_EQ(plan.groups.size(), 1u);
  for (size_t i = 0; i < c.size(); ++i) EXPECT_EQ(plan.own_first_block[i], 64);
}

TEST(RelayGroupPlanner, SmallRunsAndSinglesStayPaged) {
  // Two decode rows over one shared block of 16 bf16 tokens with GQA 4: merging two
  // partials (8.06 KV rows each) costs more than the 16 rows saved, so no group; a
  // lone sequence never forms one.
  const std::vector<int32_t> a{1, 2}, b{1, 3}, lone{9, 8, 7};
  const RelayCostModel cost = RelayCostModel::for_shape(16, 32, 8, 128, 2);
  std::vector<RelayCandidate> c(2);
  c[0].blocks = a;
  c[1].blocks = b;
  c[0].groupable_blocks = c[1].groupable_blocks = 2;
  c[0].query_len = c[1].query_len = 1;
  EXPECT_TRUE(plan_relay_groups(c, cost).groups.empty());
  std::vector<RelayCandidate> one(1);
  one[0].blocks = lone;
  one[0].groupable_blocks = 3;
  one[0].query_len = 1;
  EXPECT_TRUE(plan_relay_groups(one, cost).groups.empty());
  EXPECT_EQ(plan_relay_groups(one, cost).own_first_block[0], 0);
}

}  // namespace
}  // namespace relayllm
