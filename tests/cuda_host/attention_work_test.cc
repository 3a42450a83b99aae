// The host side of the CUDA attention (build_attention_work): no GPU needed. For
// each output (row, head) the items must cover exactly the tokens it sees, once;
// the merge lists must name exactly its partials; an item finalizes exactly when
// it holds the output's only narrow partial, and then its slots point at the
// output's other (wide) partials; every other output is left to the merge kernel.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <vector>

#include "relayllm/backend/batch_plan.h"
#include "relayllm/backend/cuda/attention_work.h"

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
  BatchPlan plan;
  plan.block_size = 16;
  auto blocks = [](int32_t n) { return (n + 15) / 16; };
  if (prefix > 0) {
    PlannedPrefixGroup g;
    g.prefix_len = prefix;
    g.num_blocks = blocks(prefix);
    plan.block_tables.resize(size_t(g.num_blocks), 0);
    plan.prefix_groups.push_back(g);
  }
  int32_t row = 0;
  for (auto [ql, ctx] : own) {
    PlannedSequence s;
    s.query_start = row;
    s.query_len = ql;
    s.context_len = ctx;
    s.prefix_group = prefix > 0 ? 0 : -1;
    s.position_offset = prefix;
    s.block_table_start = int32_t(plan.block_tables.size());
    s.num_blocks = blocks(ctx);
    plan.block_tables.resize(plan.block_tables.size() + size_t(s.num_blocks), 0);
    for (int32_t r = 0; r < ql; ++r) {
      plan.token_ids.push_back(0);
      plan.positions.push_back(prefix + ctx - ql + r);
      plan.slot_mapping.push_back(0);
      if (prefix > 0) plan.prefix_groups[0].query_rows.push_back(row + r);
    }
    row += ql;
    plan.sequences.push_back(s);
  }
  return plan;
}

struct Piece {
  int32_t table_start, begin, end, partial;
  bool narrow;
  const AttentionItem* item;
};

// Checks the work list of `plan`; hands it to `result` when given.
void check_work(const BatchPlan& plan, Shape shape, bool split, const char* label, bool own_in_wide = false,
                AttentionWork* result = nullptr) {
  SCOPED_TRACE(label);
  cuda::AttentionWorkOptions options;
  options.num_heads = shape.hq;
  options.num_kv_heads = shape.hk;
  options.num_sms = 132;
  options.items_per_sm = 8;
  options.min_split = 64;
  options.split = split;
  options.own_in_wide = own_in_wide;
  const AttentionWork work = cuda::build_attention_work(plan, options);
  if (result) *result = work;
  const int32_t group = shape.hq / shape.hk;

  // What every output sees: its own table up to its visible length, and the prefix.
  std::map<int32_t, std::map<int32_t, int32_t>> expected;  // row_head -> table_start -> tokens
  for (const PlannedSequence& s : plan.sequences)
    for (int32_t r = 0; r < s.query_len; ++r)
      for (int32_t h = 0; h < shape.hq; ++h) {
        auto& tables = expected[(s.query_start + r) * shape.hq + h];
        tables[s.block_table_start] = s.context_len - s.query_len + r + 1;
        if (s.prefix_group >= 0)
          tables[plan.prefix_groups[size_t(s.prefix_group)].block_table_start] =
              plan.prefix_groups[size_t(s.prefix_group)].prefix_len;
      }

  std::map<int32_t, std::vector<Piece>> pieces;  // row_head -> the items' ranges for it
  std::set<int32_t> partials_seen;
  for (const auto* list : {&work.narrow, &work.wide}) {
    const bool narrow = list == &work.narrow;
    for (const AttentionItem& item : *list) {
      ASSERT_GE(item.slot_count, 1);
      ASSERT_LE(item.slot_count, narrow ? cuda::kNarrowSlots : cuda::kWideSlots);
      ASSERT_LT(item.kv_begin, item.kv_end);
      if (!narrow) ASSERT_EQ(item.flags & cuda::kItemFinalizes, 0) << "a wide item finalizes";
      for (int32_t i = 0; i < item.slot_count; ++i) {
        const cuda::QuerySlot& slot = work.slots[size_t(item.slot_offset + i)];
        ASSERT_EQ((slot.row_head % shape.hq) / group, item.kv_head) << "slot outside the item's KV head";
        ASSERT_TRUE(partials_seen.insert(item.partial_offset + i).second) << "partial used twice";
        pieces[slot.row_head].push_back({item.table_start, item.kv_begin, std::min(item.kv_end, slot.visible),
                                         item.partial_offset + i, narrow, &item});
      }
    }
  }
  ASSERT_EQ(int32_t(partials_seen.size()), work.num_partials);

  const std::set<int32_t> merged(work.merge_outputs.begin(), work.merge_outputs.end());
  ASSERT_EQ(merged.size(), work.merge_outputs.size()) << "an output merged twice";
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
        ASSERT_EQ(b, at) << "output " << row_head << " table " << table << ": gap or overlap at " << at;
        at = e;
      }
      ASSERT_EQ(at, visible) << "output " << row_head << " table " << table;
    }
    // The merge list names exactly this output's partials.
    std::multiset<int32_t> listed(work.merge_partials.begin() + work.merge_offsets[size_t(row_head)],
                                  work.merge_partials.begin() + work.merge_offsets[size_t(row_head) + 1]);
    std::multiset<int32_t> own_partials;
    for (const Piece& p : mine) own_partials.insert(p.partial);
    ASSERT_EQ(listed, own_partials) << "output " << row_head;

    // Finalizing: exactly when the output has one narrow partial (and its item's
    // other slots do too); its slot then lists the wide partials.
    int32_t narrow_count = 0;
    const Piece* narrow_piece = nullptr;
    std::multiset<int32_t> wide_partials;
    for (const Piece& p : mine) {
      if (p.narrow) {
        ++narrow_count;
        narrow_piece = &p;
      } else {
        wide_partials.insert(p.partial);
      }
    }
    const bool finalized = narrow_count == 1 && (narrow_piece->item->flags & cuda::kItemFinalizes);
    ASSERT_NE(finalized, merged.count(row_head) == 1) << "output " << row_head << " written twice or never";
    if (narrow_count != 1) continue;
    const AttentionItem& item = *narrow_piece->item;
    if (!(item.flags & cuda::kItemFinalizes)) continue;
    const cuda::QuerySlot& slot = work.slots[size_t(item.slot_offset + (narrow_piece->partial - item.partial_offset))];
    std::multiset<int32_t> pointed;
    for (int32_t j = 0; j < slot.prefix_count; ++j) pointed.insert(slot.prefix_first + j * slot.prefix_stride);
    ASSERT_EQ(pointed, wide_partials) << "output " << row_head << ": prefix partials of the finalizing slot";
  }
  // A narrow item that could finalize does (the rule is "each slot's only narrow partial").
  for (const AttentionItem& item : work.narrow) {
    bool alone = true;
    for (int32_t i = 0; i < item.slot_count; ++i) {
      int32_t n = 0;
      for (const Piece& p : pieces[work.slots[size_t(item.slot_offset + i)].row_head]) n += p.narrow ? 1 : 0;
      alone = alone && n == 1;
    }
    ASSERT_EQ(alone, (item.flags & cuda::kItemFinalizes) != 0);
  }
}

TEST(AttentionWork, RelayDecodeFinalizesEveryOutput) {
  std::vector<std::pair<int32_t, int32_t>> own(32, {1, 128});
  const BatchPlan plan = make_plan(own, 2048);
  check_work(plan, {32, 32}, true, "llama2 B=32 prefix 2048");
  check_work(plan, {32, 8}, true, "llama3 B=32 prefix 2048");
  const AttentionWork work = cuda::build_attention_work(plan, {.num_heads = 32, .num_kv_heads = 32});
  EXPECT_TRUE(work.merge_outputs.empty()) << "relay decode should need no merge kernel";
  EXPECT_FALSE(work.wide.empty());
}

TEST(AttentionWork, OwnTokensInTheWideLaunch) {
  // Relay decode with the own tokens behind the prefixes in one launch: no narrow
  // item, nothing finalized, every output merged (check_work: from exactly its partials).
  std::vector<std::pair<int32_t, int32_t>> own(32, {1, 128});
  const BatchPlan plan = make_plan(own, 2048);
  for (Shape shape : {Shape{32, 32}, Shape{32, 8}}) {
    AttentionWork work;
    check_work(plan, shape, true, "relay B=32 prefix 2048, own in wide", true, &work);
    EXPECT_TRUE(work.narrow.empty());
    EXPECT_EQ(work.merge_outputs.size(), size_t(32 * 32));
    // The prefix splits come first (longest first), so they start in the first wave.
    ASSERT_FALSE(work.wide.empty());
    EXPECT_GT(work.wide.front().slot_count, cuda::kNarrowSlots);
  }
  check_work(make_plan({{5, 5}, {1, 300}, {17, 40}}, 100), {12, 4}, true, "prefill rows, own in wide", true);
  // Without a relay prefix the option changes nothing: own tokens stay narrow.
  AttentionWork paged;
  check_work(make_plan({{1, 8192}}, 0), {32, 32}, true, "paged, own in wide asked", true, &paged);
  EXPECT_FALSE(paged.narrow.empty());
  EXPECT_TRUE(paged.wide.empty());
}

TEST(AttentionWork, LongContextsSplitAndMerge) {
  check_work(make_plan({{1, 8192}}, 0), {32, 32}, true, "paged B=1 8192");
  check_work(make_plan({{1, 700}}, 8192), {32, 8}, true, "relay B=1: narrow prefix items");
  check_work(make_plan({{1, 77}, {1, 3000}, {1, 1}}, 0), {32, 4}, true, "mixed lengths");
}

TEST(AttentionWork, PrefillRowsAndOddShapes) {
  check_work(make_plan({{5, 5}, {1, 300}, {17, 40}}, 100), {12, 4}, true, "prefill rows, relay, GQA 3");
  check_work(make_plan({{33, 33}, {2, 90}}, 0), {8, 8}, true, "wide own items");
  check_work(make_plan(std::vector<std::pair<int32_t, int32_t>>(70, {1, 19}), 37), {32, 32}, true,
             "70 rows: two wide prefix tiles per head");
  check_work(make_plan({{1, 5000}, {1, 20}}, 4000), {32, 8}, false, "no split");
}

}  // namespace
}  // namespace relayllm
