#include "relayllm/backend/cuda/attention_work.h"

#include <algorithm>

#include "relayllm/common/error.h"

namespace relayllm::cuda {
namespace {

// Item boundaries fall on multiples of the kernels' KV tiles so that no tile is cut
// short in the middle of a range (a cut tile is correct, only wasteful).
constexpr int32_t kNarrowSplitAlign = 16;
constexpr int32_t kWideSplitAlign = 64;

struct Unsplit {
  int32_t slot_offset, slot_count, kv_head, table_start, kv_len;
};

}  // namespace

AttentionWork build_attention_work(const BatchPlan& plan, const AttentionWorkOptions& options) {
  const int32_t hq = options.num_heads, hk = options.num_kv_heads, group = hq / hk;
  RELAYLLM_CHECK(hk > 0 && hq % hk == 0, "attention: {} query heads over {} kv heads", hq, hk);
  AttentionWork work;
  std::vector<Unsplit> base;

  // Packs slots [begin, end) of one (table, kv head) into items no taller than a tile.
  auto add_items = [&](size_t begin, size_t end, int32_t kv_head, int32_t table_start) {
    int32_t total = int32_t(end - begin);
    int32_t tile = total <= kNarrowSlots ? kNarrowSlots : kWideSlots;
    for (int32_t s = 0; s < total; s += tile) {
      int32_t count = std::min(tile, total - s);
      int32_t kv_len = 0;
      for (int32_t i = 0; i < count; ++i) kv_len = std::max(kv_len, work.slots[begin + s + i].visible);
      if (kv_len > 0) base.push_back({int32_t(begin) + s, count, kv_head, table_start, kv_len});
    }
  };

  for (const PlannedSequence& seq : plan.sequences) {
    for (int32_t h = 0; h < hk; ++h) {
      size_t begin = work.slots.size();
      for (int32_t r = 0; r < seq.query_len; ++r)
        for (int32_t j = 0; j < group; ++j)
          work.slots.push_back({(seq.query_start + r) * hq + h * group + j,
                                seq.context_len - seq.query_len + r + 1});
      add_items(begin, work.slots.size(), h, seq.block_table_start);
    }
  }
  for (const PlannedPrefixGroup& g : plan.prefix_groups) {
    for (int32_t h = 0; h < hk; ++h) {
      size_t begin = work.slots.size();
      for (int32_t row : g.query_rows)
        for (int32_t j = 0; j < group; ++j) work.slots.push_back({row * hq + h * group + j, g.prefix_len});
      add_items(begin, work.slots.size(), h, g.block_table_start);
    }
  }

  // Split any range longer than an even share of its kernel's work (never below
  // min_split tokens): with many short items (decode rows) and a few long ones
  // (relay prefixes), the long ones would otherwise run alone at the end. Narrow
  // and wide items run as two launches, so each list gets its own share:
  // items_per_sm items per multiprocessor for the narrow kernel, wide_items_per_sm
  // (its occupancy) for the wide one.
  int64_t narrow_len = 0, wide_len = 0;
  for (const Unsplit& u : base) (u.slot_count <= kNarrowSlots ? narrow_len : wide_len) += u.kv_len;
  auto chunk_for = [&](int64_t total, int64_t target_items, int32_t align) {
    if (!options.split || total == 0) return int32_t(1 << 30);
    int64_t per_item = (total + target_items - 1) / target_items;
    int64_t chunk = std::max<int64_t>(options.min_split, per_item);
    return int32_t((chunk + align - 1) / align * align);
  };
  const int32_t narrow_chunk =
      chunk_for(narrow_len, int64_t(options.num_sms) * options.items_per_sm, kNarrowSplitAlign);
  const int32_t wide_chunk =
      chunk_for(wide_len, int64_t(options.num_sms) * std::max(options.wide_items_per_sm, 1), kWideSplitAlign);

  const int32_t rows = std::max(plan.num_rows(), options.num_rows);
  std::vector<int32_t> counts(size_t(rows) * hq + 1, 0);
  // Per output: the splits of the wide item it is in (a row is in at most one
  // prefix group), and how many wide items it is in.
  struct WideSplits {
    int32_t first = 0, stride = 0, count = 0, groups = 0;
  };
  std::vector<WideSplits> wide_of(size_t(rows) * hq);
  const bool own_in_wide = options.own_in_wide && wide_len > 0;
  for (const Unsplit& u : base) {
    const bool wide = u.slot_count > kNarrowSlots;
    const int32_t chunk = wide ? wide_chunk : narrow_chunk;
    if (wide) {
      for (int32_t i = 0; i < u.slot_count; ++i) {
        WideSplits& w = wide_of[work.slots[u.slot_offset + i].row_head];
        w = {work.num_partials + i, u.slot_count, (u.kv_len + chunk - 1) / chunk, w.groups + 1};
      }
    }
    for (int32_t b = 0; b < u.kv_len; b += chunk) {
      AttentionItem item{u.slot_offset, u.slot_count, u.kv_head, u.table_start, b,
                         std::min(u.kv_len, b + chunk), work.num_partials};
      work.num_partials += u.slot_count;
      (wide || own_in_wide ? work.wide : work.narrow).push_back(item);
      for (int32_t i = 0; i < u.slot_count; ++i) ++counts[work.slots[u.slot_offset + i].row_head];
    }
  }
  // Longest first: CTAs claim items in list order, so the long ones start in the
  // first wave and the short ones fill in behind them. (Own items come first in
  // plan order; a short item first would leave a long one for the tail, which cost
  // 20% at 8 rows sharing an 8192-token prefix.)
  auto longest_first = [](const AttentionItem& a, const AttentionItem& b) {
    return a.kv_end - a.kv_begin > b.kv_end - b.kv_begin;
  };
  std::stable_sort(work.narrow.begin(), work.narrow.end(), longest_first);
  std::stable_sort(work.wide.begin(), work.wide.end(), longest_first);

  work.merge_offsets.assign(size_t(rows) * hq + 1, 0);
  for (size_t i = 0; i + 1 < work.merge_offsets.size(); ++i)
    work.merge_offsets[i + 1] = work.merge_offsets[i] + counts[i];
  work.merge_partials.assign(size_t(work.num_partials), 0);
  std::vector<int32_t> fill(work.merge_offsets.begin(), work.merge_offsets.end() - 1);
  for (const auto* list : {&work.narrow, &work.wide})
    for (const AttentionItem& item : *list)
      for (int32_t i = 0; i < item.slot_count; ++i)
        work.merge_partials[fill[work.slots[item.slot_offset + i].row_head]++] = item.partial_offset + i;

  // A narrow item finalizes when each of its slots has no other narrow partial: the
  // rest come from wide items, which have all finished when the narrow kernel runs.
  std::vector<int32_t> narrow_partials(size_t(rows) * hq, 0);
  for (const AttentionItem& item : work.narrow)
    for (int32_t i = 0; i < item.slot_count; ++i) ++narrow_partials[work.slots[item.slot_offset + i].row_head];
  std::vector<char> finalized(size_t(rows) * hq, 0);
  for (AttentionItem& item : work.narrow) {
    bool alone = true;
    for (int32_t i = 0; i < item.slot_count && alone; ++i) {
      const int32_t o = work.slots[item.slot_offset + i].row_head;
      alone = narrow_partials[o] == 1 && wide_of[o].groups <= 1;
    }
    if (!alone) continue;
    item.flags |= kItemFinalizes;
    for (int32_t i = 0; i < item.slot_count; ++i) {
      QuerySlot& slot = work.slots[item.slot_offset + i];
      finalized[slot.row_head] = 1;
      const WideSplits& w = wide_of[slot.row_head];
      if (w.groups == 0) continue;
      slot.prefix_first = w.first;
      slot.prefix_stride = w.stride;
      slot.prefix_count = w.count;
    }
  }
  // Outputs with no partial at all (padding rows) are left alone: nothing reads them.
  for (int32_t o = 0; o < rows * hq; ++o)
    if (!finalized[o] && counts[o] > 0) work.merge_outputs.push_back(o);
  return work;
}

}  // namespace relayllm::cuda
