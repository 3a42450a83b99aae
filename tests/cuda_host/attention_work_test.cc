// The host side of the CUDA attention (build_attention_work): no GPU needed. For
// each output (row, head) the items must cover exactly the tokens it sees, once;
// its partials must be contiguous and, when more than one, listed for the merge
// exactly once with that range; every slot must know its output's part count;
// units must be well formed (alone: one item; packed: up to four narrow items)
// and ordered longest first. Nested relay groups are more ranges of their rows'
// outputs: each level whole, once.
#include "relayllm/backend/cuda/attention_work.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <numeric>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "../common/relay_tree_plan.h"
#include "relayllm/backend/batch_plan.h"
#include "relayllm/backend/batch_plan_builder.h"

namespace relayllm {
namespace {

using cuda::AttentionItem;
using cuda::AttentionWork;

struct Shape {
  int32_t hq, hk;
};

// Sequences of (query_len, context_len), all in one relay group of `prefix` tokens
// when prefix > 0. Block ids are irrelevant to the work list; tables are ranges.
BatchPlan make_plan(const std::vector<std::pair<int32_t, int32_t>>& own, int32_t prefix) {
  BatchPlanBuilder builder(16);
  auto zeros = [](int32_t tokens) { return std::vector<int32_t>(size_t((tokens + 15) / 16), 0); };
  const int32_t group = prefix > 0 ? builder.prefix_group(0, prefix, zeros(prefix)) : -1;
  for (auto [ql, ctx] : own) {
    const std::vector<int32_t> tokens(size_t(ql), 0);
    builder.add_sequence({tokens, ctx - ql, zeros(ctx), group, prefix});
  }
  return builder.take();
}

struct Piece {
  int32_t table_start, begin, end, partial;
};

// Checks the work list of `plan`; hands it to `result` when given.
void check_work(const BatchPlan& plan, Shape shape, bool split, const char* label,
                AttentionWork* result = nullptr) {
  SCOPED_TRACE(label);
  cuda::AttentionWorkOptions options;
  options.num_heads = shape.hq;
  options.num_kv_heads = shape.hk;
  options.num_sms = 132;
  options.items_per_sm = 8;
  options.min_split = 64;
  options.split = split;
  const AttentionWork work = cuda::build_attention_work(plan, options);
  if (result) *result = work;
  const int32_t group = shape.hq / shape.hk;

  // What every output sees: its own table up to its visible length, and the prefix.
  std::map<int32_t, std::map<int32_t, int32_t>> expected;  // row_head -> table_start -> tokens
  std::set<int32_t> prefix_tables;
  for (const PlannedPrefixGroup& g : plan.prefix_groups) prefix_tables.insert(g.block_table_start);
  // A prefix item reads a group's table (a joined range reads it as prefix_table).
  auto is_prefix = [&](const AttentionItem& item) {
    return prefix_tables.count(item.table_start) > 0;
  };
  for (const PlannedSequence& s : plan.sequences)
    for (int32_t r = 0; r < s.query_len; ++r)
      for (int32_t h = 0; h < shape.hq; ++h) {
        auto& tables = expected[(s.query_start + r) * shape.hq + h];
        tables[s.block_table_start] = s.context_len - s.query_len + r + 1;
        // Every level of the sequence's group chain, whole (no mask).
        for (int32_t g = s.prefix_group; g >= 0; g = plan.prefix_groups[size_t(g)].parent)
          tables[plan.prefix_groups[size_t(g)].block_table_start] =
              plan.prefix_groups[size_t(g)].prefix_len;
      }

  // Units: one alone repeats its item in every entry and takes one stage per 64
  // tokens; a pack holds 1-4 narrow items first, empty entries after, and takes as
  // many stages as its longest item needs at 16 tokens a stage. Longest first.
  std::vector<const AttentionItem*> items;
  for (size_t u = 0; u < work.units.size(); ++u) {
    const cuda::AttentionUnit& unit = work.units[u];
    if (u > 0) ASSERT_GE(work.units[u - 1].stages, unit.stages) << "unit " << u << " out of order";
    int32_t stages = 0;
    if (!unit.packed) {
      const AttentionItem& item = unit.items[0];
      ASSERT_LE(item.slot_count, cuda::kWideSlots);
      for (const AttentionItem& copy : unit.items)
        ASSERT_EQ(std::memcmp(&copy, &item, sizeof(item)), 0);
      items.push_back(&item);
      stages = (item.kv_end - item.kv_begin + 63) / 64;
    } else {
      bool ended = false;
      for (const AttentionItem& item : unit.items) {
        if (item.slot_count == 0) {
          ended = true;
          continue;
        }
        ASSERT_FALSE(ended) << "unit " << u << ": an item after an empty entry";
        ASSERT_LE(item.slot_count, cuda::kNarrowSlots);
        items.push_back(&item);
        stages = std::max(stages, (item.kv_end - item.kv_begin + 15) / 16);
      }
      ASSERT_GT(unit.items[0].slot_count, 0) << "unit " << u << " is empty";
    }
    ASSERT_EQ(unit.stages, stages) << "unit " << u;
  }
  ASSERT_EQ(int32_t(items.size()), work.num_items);

  std::map<int32_t, std::vector<Piece>> pieces;  // row_head -> the items' ranges for it
  std::map<int32_t, int32_t> seq_group,
      group_members;                          // own table -> prefix group; group -> sequences
  std::map<int32_t, int32_t> group_of_table;  // prefix table -> group
  for (size_t g = 0; g < plan.prefix_groups.size(); ++g)
    group_of_table[plan.prefix_groups[g].block_table_start] = int32_t(g);
  for (const PlannedSequence& s : plan.sequences) {
    seq_group[s.block_table_start] = s.prefix_group;
    for (int32_t g = s.prefix_group; g >= 0; g = plan.prefix_groups[size_t(g)].parent)
      ++group_members[g];
  }
  int32_t max_levels = 0;  // the deepest chain of groups a sequence has
  for (const PlannedSequence& s : plan.sequences) {
    int32_t levels = 0;
    for (int32_t g = s.prefix_group; g >= 0; g = plan.prefix_groups[size_t(g)].parent) ++levels;
    max_levels = std::max(max_levels, levels);
  }
  std::set<int32_t> partials_seen;
  for (const AttentionItem* item : items) {
    ASSERT_GE(item->slot_count, 1);
    ASSERT_LT(item->kv_begin, item->kv_end);
    for (int32_t i = 0; i < item->slot_count; ++i) {
      const cuda::QuerySlot& slot = work.slots[size_t(item->slot_offset + i)];
      ASSERT_EQ((slot.row_head % shape.hq) / group, item->kv_head)
          << "slot outside the item's KV head";
      const int32_t partial = slot.partial_base + item->split;
      ASSERT_TRUE(partials_seen.insert(partial).second) << "partial used twice";
      const int32_t begin = item->kv_begin, end = std::min(item->kv_end, slot.visible),
                    p = item->prefix_len;
      if (is_prefix(*item)) ASSERT_GE(group_members[group_of_table[item->table_start]], 2);
      if (p == 0) {
        pieces[slot.row_head].push_back({item->table_start, begin, end, partial});
        continue;
      }
      // A joined range: [0, p) of the prefix's table, then the own table from 0 (only
      // for a prefix with one sequence in the step).
      ASSERT_EQ(group_members[seq_group[item->table_start]], 1);
      ASSERT_LT(plan.prefix_groups[size_t(seq_group[item->table_start])].parent, 0)
          << "only an outermost group is joined";
      ASSERT_EQ(p, plan.prefix_groups[size_t(seq_group[item->table_start])].prefix_len);
      ASSERT_EQ(item->prefix_table,
                plan.prefix_groups[size_t(seq_group[item->table_start])].block_table_start);
      pieces[slot.row_head].push_back(
          {item->prefix_table, std::min(begin, p), std::min(end, p), partial});
      pieces[slot.row_head].push_back(
          {item->table_start, std::max(begin, p) - p, std::max(end, p) - p, partial});
    }
  }
  ASSERT_EQ(int32_t(partials_seen.size()), work.num_partials);

  for (const auto& [row_head, tables] : expected) {
    auto& mine = pieces[row_head];
    // Coverage: per table, the ranges tile [0, visible) without overlap.
    for (const auto& [table, visible] : tables) {
      std::vector<std::pair<int32_t, int32_t>> ranges;
      for (const Piece& p : mine)
        if (p.table_start == table && p.begin < p.end) ranges.push_back({p.begin, p.end});
      std::sort(ranges.begin(), ranges.end());
      int32_t at = 0;
      for (auto [b, e] : ranges) {
        ASSERT_EQ(b, at) << "output " << row_head << " table " << table << ": gap or overlap at "
                         << at;
        at = e;
      }
      ASSERT_EQ(at, visible) << "output " << row_head << " table " << table;
    }
  }
  // An output's partials are contiguous; those with more than one are listed for
  // the merge, once each, with exactly their range. Every slot knows its output's
  // part count (1: its item writes the output itself); at most 32 pieces per range.
  std::map<int32_t, cuda::MergeOutput> merges;
  for (const cuda::MergeOutput& m : work.merges)
    ASSERT_TRUE(merges.emplace(m.row_head, m).second) << "output " << m.row_head << " merged twice";
  std::map<int32_t, int32_t> parts_of;
  for (const auto& [row_head, mine] : pieces) {
    std::set<int32_t> partials;
    for (const Piece& p : mine) partials.insert(p.partial);
    const int32_t parts = int32_t(partials.size());
    parts_of[row_head] = parts;
    ASSERT_EQ(*partials.rbegin() - *partials.begin() + 1, parts)
        << "output " << row_head << ": not contiguous";
    ASSERT_EQ(merges.count(row_head), parts > 1 ? 1u : 0u) << "output " << row_head;
    if (parts > 1) {
      ASSERT_EQ(merges[row_head].first, *partials.begin()) << "output " << row_head;
      ASSERT_EQ(merges[row_head].parts, parts) << "output " << row_head;
    }
  }
  for (const cuda::QuerySlot& slot : work.slots) {
    ASSERT_EQ(slot.parts, parts_of[slot.row_head]) << "output " << slot.row_head;
    ASSERT_LE(slot.parts, (max_levels + 1) * 32) << "output " << slot.row_head;
  }
}

int32_t count_units(const AttentionWork& work, bool packed) {
  return int32_t(
      std::count_if(work.units.begin(), work.units.end(),
                    [&](const cuda::AttentionUnit& u) { return (u.packed != 0) == packed; }));
}

TEST(AttentionWork, RelayDecodeRunsPrefixAndOwnTokensInOneList) {
  std::vector<std::pair<int32_t, int32_t>> own(32, {1, 128});
  const BatchPlan plan = make_plan(own, 2048);
  for (Shape shape : {Shape{32, 32}, Shape{32, 8}}) {
    AttentionWork work;
    check_work(plan, shape, true,
               shape.hk == 32 ? "llama2 B=32 prefix 2048" : "llama3 B=32 prefix 2048", &work);
    EXPECT_GT(count_units(work, false), 0) << "the prefix is wide (32 rows share each KV tile)";
    // Own tokens: narrow items per (row, kv head), packed in fours (the GQA shape's
    // 256 items of 128 tokens are split in two to give every warp of the GPU work).
    EXPECT_EQ(count_units(work, true), shape.hk == 32 ? 32 * 32 / 4 : 2 * 32 * 8 / 4);
    // Every output has its prefix splits and its own tokens to merge.
    for (const cuda::QuerySlot& slot : work.slots) EXPECT_GE(slot.parts, 2);
    EXPECT_EQ(work.merges.size(), size_t(32 * 32));
  }
}

TEST(AttentionWork, SummaryCountsUnitsMakespanAndPartials) {
  // Paged B=32, own 128, MHA: 256 packs of 8 stages; on 64 CTAs four rounds of 9.
  std::vector<std::pair<int32_t, int32_t>> own(32, {1, 128});
  AttentionWork paged;
  check_work(make_plan(own, 0), {32, 32}, true, "paged B=32 own 128", &paged);
  const cuda::AttentionWorkSummary p = cuda::summarize(paged, 64, 128);
  EXPECT_EQ(p.units, 256);
  EXPECT_EQ(p.packed_units, 256);
  EXPECT_EQ(p.stages, 256 * 8);
  EXPECT_EQ(p.makespan_stages, 4 * 9);
  EXPECT_EQ(p.partials, 0);
  EXPECT_EQ(p.partial_bytes, 0.0);
  EXPECT_EQ(cuda::summarize(paged, 1000, 128).makespan_stages, 9) << "one wave";

  // Relay: every output merges its own part and its prefix pieces; the partials are
  // those of the merges, each written once and read once (o and lse in fp32).
  AttentionWork relay;
  check_work(make_plan(own, 2048), {32, 32}, true, "relay B=32 prefix 2048", &relay);
  const cuda::AttentionWorkSummary r = cuda::summarize(relay, 264, 128);
  int64_t parts = 0;
  for (const cuda::MergeOutput& m : relay.merges) parts += m.parts;
  EXPECT_EQ(r.partials, parts);
  EXPECT_GT(r.partials, int64_t(2 * 32 * 32));
  EXPECT_DOUBLE_EQ(r.partial_bytes, 2.0 * double(parts) * 129 * 4);
  EXPECT_EQ(r.units, int64_t(relay.units.size()));
  int64_t stages = 0, longest = 0;
  for (const cuda::AttentionUnit& u : relay.units) {
    stages += u.stages;
    longest = std::max<int64_t>(longest, u.stages);
  }
  EXPECT_EQ(r.stages, stages);
  EXPECT_GE(r.makespan_stages, std::max<int64_t>(longest + 1, (stages + r.units + 263) / 264));
}

TEST(AttentionWork, PagedDecodePacksFourItemsAndWritesOutputsDirectly) {
  std::vector<std::pair<int32_t, int32_t>> own(32, {1, 128});
  AttentionWork work;
  check_work(make_plan(own, 0), {32, 32}, true, "paged B=32 own 128", &work);
  EXPECT_EQ(count_units(work, false), 0);
  EXPECT_EQ(work.units.size(), size_t(32 * 32 / 4));
  for (const cuda::QuerySlot& slot : work.slots)
    EXPECT_EQ(slot.parts, 1) << "an unsplit output merges nothing";
  // Rows of different lengths: 40 items (5 rows x 8 heads), ten packs.
  AttentionWork mixed;
  check_work(make_plan({{1, 300}, {1, 20}, {1, 200}, {1, 5}, {1, 64}}, 0), {8, 8}, false,
             "five rows", &mixed);
  ASSERT_EQ(mixed.units.size(), size_t(10));
}

int32_t longest_unit(const AttentionWork& work) {
  int32_t stages = 0;
  for (const cuda::AttentionUnit& u : work.units) stages = std::max(stages, u.stages);
  return stages;
}

TEST(AttentionWork, RelayAtBatchOneIsCutLikePaged) {
  // One sequence on a prefix: its prefix and own tokens are one joined range per
  // head, cut exactly as the paged step's single range (relay must not be slower
  // than paged at batch 1).
  for (Shape shape : {Shape{32, 32}, Shape{32, 8}})
    for (auto [prefix, own] :
         {std::pair{512, 128}, std::pair{2048, 512}, std::pair{8192, 128}, std::pair{8192, 512}}) {
      AttentionWork relay, paged;
      check_work(make_plan({{1, own}}, prefix), shape, true, "relay B=1", &relay);
      check_work(make_plan({{1, prefix + own}}, 0), shape, true, "paged B=1", &paged);
      ASSERT_EQ(relay.units.size(), paged.units.size()) << shape.hk << " " << prefix << "/" << own;
      for (size_t u = 0; u < relay.units.size(); ++u) {
        ASSERT_EQ(relay.units[u].stages, paged.units[u].stages);
        ASSERT_EQ(relay.units[u].items[0].kv_begin, paged.units[u].items[0].kv_begin);
        ASSERT_EQ(relay.units[u].items[0].kv_end, paged.units[u].items[0].kv_end);
        ASSERT_EQ(relay.units[u].items[0].prefix_len, prefix);
      }
      EXPECT_EQ(relay.merges.size(), paged.merges.size());
      EXPECT_EQ(longest_unit(relay), longest_unit(paged));
    }
}

TEST(AttentionWork, PrefixWithOneSequenceIsJoinedOthersAreShared) {
  // Groups 0 (three sequences) and 1 (one): group 1's prefix is read through its
  // sequence's joined range; group 0's once for its three sequences.
  BatchPlanBuilder builder(16);
  auto zeros = [](int32_t tokens) { return std::vector<int32_t>(size_t((tokens + 15) / 16), 0); };
  for (int32_t key : {0, 1})
    builder.prefix_group(key, key == 0 ? 300 : 1000, zeros(key == 0 ? 300 : 1000));
  const std::vector<std::array<int32_t, 3>> seqs = {
      {1, 50, 0}, {4, 90, 1}, {1, 7, 0}, {1, 200, 0}, {1, 33, -1}};
  for (auto [ql, ctx, grp] : seqs) {
    const std::vector<int32_t> tokens(size_t(ql), 0);
    builder.add_sequence({tokens, ctx - ql, zeros(ctx), grp});
  }
  const BatchPlan plan = builder.take();
  for (Shape shape : {Shape{8, 8}, Shape{32, 4}})
    for (bool split : {true, false}) {
      AttentionWork work;
      check_work(plan, shape, split, "two groups", &work);
      int32_t joined = 0, shared = 0;
      for (const cuda::AttentionUnit& u : work.units)
        for (const AttentionItem& item : u.items) {
          if (item.slot_count == 0) continue;
          if (item.prefix_len > 0) ++joined;
          if (item.table_start == plan.prefix_groups[0].block_table_start) ++shared;
          EXPECT_NE(item.table_start, plan.prefix_groups[1].block_table_start)
              << "group 1 is joined";
        }
      EXPECT_GT(joined, 0);
      EXPECT_GT(shared, 0);
    }
}

TEST(AttentionWork, LongContextsSplitAndMerge) {
  // One row of 8192 tokens per head: units of their own (the wide layout), an even
  // share each: 32 heads x 8192 tokens over 132 x 2 CTAs -> 1024-token pieces.
  AttentionWork paged;
  check_work(make_plan({{1, 8192}}, 0), {32, 32}, true, "paged B=1 8192", &paged);
  EXPECT_EQ(count_units(paged, true), 0);
  EXPECT_EQ(paged.units.size(), size_t(32 * 8));
  EXPECT_EQ(paged.merges.size(), size_t(32));
  check_work(make_plan({{1, 700}}, 8192), {32, 8}, true, "relay B=1: narrow prefix items");
  check_work(make_plan({{1, 77}, {1, 3000}, {1, 1}}, 0), {32, 4}, true, "mixed lengths");
}

TEST(AttentionWork, PrefillRowsAndOddShapes) {
  check_work(make_plan({{5, 5}, {1, 300}, {17, 40}}, 100), {12, 4}, true,
             "prefill rows, relay, GQA 3");
  check_work(make_plan({{33, 33}, {2, 90}}, 0), {8, 8}, true, "wide own items");
  check_work(make_plan(std::vector<std::pair<int32_t, int32_t>>(70, {1, 19}), 37), {32, 32}, true,
             "70 rows: two wide prefix tiles per head");
  check_work(make_plan({{1, 5000}, {1, 20}}, 4000), {32, 8}, false, "no split");
}

TEST(AttentionWork, NestedGroupsOfRandomTrees) {
  // Trees of depth 1-3 (registered or automatic outermost level, lengths on block
  // boundaries or not, decode rows and prefill chunks, sequences without a group):
  // every output sees each level of its chain whole and its own tokens, once; a
  // row's partials (its levels' pieces and its own) are merged together.
  int32_t deepest = 0, nested_items = 0;
  for (uint64_t seed = 0; seed < 60; ++seed) {
    testing::TreeStepOptions o;
    o.depth = 1 + int32_t(seed % 3);
    o.registered_root = seed % 2 == 0;
    o.aligned = seed % 5 < 2;
    o.block_size = seed % 7 == 3 ? 5 : 16;
    const testing::TreeStep step = testing::random_tree_step(seed, o);
    deepest = std::max(deepest, step.depth);
    const std::string label = "tree seed " + std::to_string(seed);
    for (Shape shape : {Shape{8, 8}, Shape{32, 4}, Shape{12, 4}})
      for (bool split : {true, false}) {
        AttentionWork work;
        check_work(step.plan, shape, split, label.c_str(), &work);
        for (const cuda::AttentionUnit& u : work.units)
          for (const AttentionItem& item : u.items)
            for (const PlannedPrefixGroup& g : step.plan.prefix_groups)
              nested_items +=
                  item.slot_count > 0 && g.parent >= 0 && item.table_start == g.block_table_start;
      }
  }
  EXPECT_EQ(deepest, 3);
  EXPECT_GT(nested_items, 0);
}

TEST(AttentionWork, ThreeLevelDecodeReadsEachLevelOncePerKvHead) {
  // The benchmark's tree at small scale: a system prompt over 4 documents, 4
  // questions each, decode rows. Each level is read once per KV head for all its
  // rows (no split): 1 + 4 level ranges, and 16 own ranges, per KV head.
  BatchPlanBuilder builder(16);
  std::vector<int32_t> blocks(64 + 4 * 128 + 16 * 8);
  std::iota(blocks.begin(), blocks.end(), 0);
  const int32_t system = builder.nested_group(-1, std::span(blocks).subspan(0, 64));
  for (int32_t d = 0; d < 4; ++d) {
    const int32_t doc =
        builder.nested_group(system, std::span(blocks).subspan(size_t(64 + 128 * d), 128));
    for (int32_t q = 0; q < 4; ++q) {
      const std::vector<int32_t> token(1, 0);
      builder.add_sequence({token, 106, std::span(blocks).subspan(size_t(576 + 8 * (4 * d + q)), 8),
                            doc, 1024 + 2048});
    }
  }
  const BatchPlan plan = builder.take();
  AttentionWork work;
  check_work(plan, {32, 8}, false, "3-level decode", &work);
  std::map<int32_t, int32_t> items_per_table;
  for (const cuda::AttentionUnit& u : work.units) {
    if (u.packed) {
      for (const AttentionItem& item : u.items)
        if (item.slot_count > 0) ++items_per_table[item.table_start];
    } else {
      ++items_per_table[u.items[0].table_start];
    }
  }
  // A level of 16 rows x GQA 4 = 64 slots: one wide item per KV head.
  EXPECT_EQ(items_per_table[plan.prefix_groups[0].block_table_start], 8);
  for (int32_t d = 1; d <= 4; ++d)
    EXPECT_EQ(items_per_table[plan.prefix_groups[size_t(d)].block_table_start], 8);
  EXPECT_EQ(work.merges.size(), size_t(16 * 32));
  for (const cuda::MergeOutput& m : work.merges) EXPECT_EQ(m.parts, 3);
}

}  // namespace
}  // namespace relayllm
