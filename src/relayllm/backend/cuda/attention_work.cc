#include "relayllm/backend/cuda/attention_work.h"

#include <algorithm>
#include <functional>
#include <queue>

#include "relayllm/common/error.h"

namespace relayllm::cuda {
namespace {

constexpr int32_t kMaxSplits = 32;

struct Unsplit {
  int32_t slot_offset, slot_count, kv_head, table_start, kv_len;
  int32_t prefix_table = 0, prefix_len = 0;  // a joined range (AttentionItem)
  int32_t pieces = 0;
};

int32_t stages_of(const AttentionItem& item, int32_t tokens_per_stage) {
  return (item.kv_end - item.kv_begin + tokens_per_stage - 1) / tokens_per_stage;
}

int32_t align_up(int64_t n, int32_t align) { return int32_t((n + align - 1) / align * align); }

// Indices of `keys` (stage counts: small non-negative integers) ordered largest
// first, equal keys in their order. A counting sort: this runs for every step.
std::vector<int32_t> largest_first(const std::vector<int32_t>& keys) {
  int32_t top = 0;
  for (int32_t k : keys) top = std::max(top, k);
  std::vector<int32_t> start(size_t(top) + 2, 0);
  for (int32_t k : keys) ++start[size_t(top - k) + 1];
  for (size_t i = 1; i < start.size(); ++i) start[i] += start[i - 1];
  std::vector<int32_t> order(keys.size());
  for (size_t i = 0; i < keys.size(); ++i)
    order[size_t(start[size_t(top - keys[i])]++)] = int32_t(i);
  return order;
}

// How a step's ranges are cut: the piece length of wide ranges, of narrow ranges
// that run in units of their own, and of packed narrow ranges; narrow ranges at
// least long_narrow tokens run alone.
struct Cut {
  int32_t wide_chunk, alone_chunk, narrow_chunk;
  int64_t long_narrow;
};

struct RangeCut {
  bool alone;
  int32_t chunk;
};

// No range is cut into more than kMaxSplits pieces (one warp merges an output).
RangeCut cut_range(const Unsplit& u, const Cut& cut) {
  const bool is_wide = u.slot_count > kNarrowSlots, alone = is_wide || u.kv_len >= cut.long_narrow;
  const int32_t align = alone ? kWideTileTokens : kPackTileTokens;
  const int32_t fewest = align_up((u.kv_len + kMaxSplits - 1) / kMaxSplits, align);
  return {alone, std::max(is_wide ? cut.wide_chunk
                          : alone ? cut.alone_chunk
                                  : cut.narrow_chunk,
                          fewest)};
}

// The time a cut takes, in stages, as CTAs claiming its units longest first would
// take it: a unit costs its stages plus one (its start and end), a pack its
// longest item's.
int64_t makespan(const std::vector<Unsplit>& base, const Cut& cut, int64_t ctas) {
  std::vector<int32_t> units, packed;
  for (const Unsplit& u : base) {
    const RangeCut rc = cut_range(u, cut);
    const int32_t tokens = rc.alone ? kWideTileTokens : kPackTileTokens;
    for (int32_t b = 0; b < u.kv_len; b += rc.chunk)
      (rc.alone ? units : packed)
          .push_back((std::min(u.kv_len - b, rc.chunk) + tokens - 1) / tokens);
  }
  std::sort(packed.begin(), packed.end(), std::greater<>());
  for (size_t i = 0; i < packed.size(); i += kPackItems) units.push_back(packed[i]);
  std::sort(units.begin(), units.end(), std::greater<>());
  if (int64_t(units.size()) <= ctas) return units.empty() ? 0 : units.front() + 1;  // one wave
  std::priority_queue<int64_t, std::vector<int64_t>, std::greater<>> load;
  for (int64_t i = 0; i < ctas; ++i) load.push(0);
  int64_t longest = 0;
  for (int32_t stages : units) {
    const int64_t at = load.top() + stages + 1;
    load.pop();
    load.push(at);
    longest = std::max(longest, at);
  }
  return longest;
}

}  // namespace

AttentionWork build_attention_work(const BatchPlan& plan, const AttentionWorkOptions& options) {
  const int32_t hq = options.num_heads, hk = options.num_kv_heads, group = hq / hk;
  RELAYLLM_CHECK(hk > 0 && hq % hk == 0, "attention: {} query heads over {} kv heads", hq, hk);
  AttentionWork work;
  std::vector<Unsplit> base;

  // Packs slots [begin, end) of one (range, kv head) into items no taller than a tile.
  auto add_items = [&](size_t begin, size_t end, int32_t kv_head, int32_t table_start,
                       const Unsplit& range) {
    int32_t total = int32_t(end - begin);
    int32_t tile = total <= kNarrowSlots ? kNarrowSlots : kWideSlots;
    for (int32_t s = 0; s < total; s += tile) {
      Unsplit u = range;
      u.slot_offset = int32_t(begin) + s;
      u.slot_count = std::min(tile, total - s);
      u.kv_head = kv_head;
      u.table_start = table_start;
      u.kv_len = 0;
      for (int32_t i = 0; i < u.slot_count; ++i)
        u.kv_len = std::max(u.kv_len, work.slots[begin + s + i].visible);
      if (u.kv_len > 0) base.push_back(u);
    }
  };

  // Groups may nest (automatic relay groups inside one another or inside a
  // registered prefix): a row is a row of its sequence's innermost group and of
  // every ancestor, and each level is one more range of its outputs: its items
  // write partials like the pieces of a split range, and the merge combines them
  // all by lse. Members count every sequence below a group.
  const size_t num_groups = plan.prefix_groups.size();
  std::vector<int32_t> members(num_groups, 0);
  for (const PlannedSequence& seq : plan.sequences)
    for (int32_t g = seq.prefix_group; g >= 0; g = plan.prefix_groups[size_t(g)].parent) {
      RELAYLLM_CHECK(g < int32_t(num_groups) && plan.prefix_groups[size_t(g)].parent < g,
                     "cuda attention: relay group {} of {} has parent {} (parents come first)", g,
                     num_groups,
                     g < int32_t(num_groups) ? plan.prefix_groups[size_t(g)].parent : -2);
      ++members[size_t(g)];
    }
  // An outermost group with one sequence in the step is joined to its own tokens
  // (a nested group of one is never planned; were it, it would still be exact as a
  // range of its own).
  std::vector<char> joined(num_groups, 0);
  for (size_t g = 0; g < num_groups; ++g)
    joined[g] = members[g] == 1 && plan.prefix_groups[g].parent < 0;
  for (const PlannedSequence& seq : plan.sequences) {
    Unsplit range{};
    if (seq.prefix_group >= 0 && joined[size_t(seq.prefix_group)]) {
      const PlannedPrefixGroup& g = plan.prefix_groups[size_t(seq.prefix_group)];
      range.prefix_table = g.block_table_start;
      range.prefix_len = g.prefix_len;
    }
    for (int32_t h = 0; h < hk; ++h) {
      size_t begin = work.slots.size();
      for (int32_t r = 0; r < seq.query_len; ++r)
        for (int32_t j = 0; j < group; ++j)
          work.slots.push_back({(seq.query_start + r) * hq + h * group + j,
                                range.prefix_len + seq.context_len - seq.query_len + r + 1});
      add_items(begin, work.slots.size(), h, seq.block_table_start, range);
    }
  }
  for (size_t gi = 0; gi < num_groups; ++gi) {
    const PlannedPrefixGroup& g = plan.prefix_groups[gi];
    if (joined[gi] || members[gi] == 0) continue;
    const Unsplit range{};
    for (int32_t h = 0; h < hk; ++h) {
      size_t begin = work.slots.size();
      for (int32_t row : g.query_rows)
        for (int32_t j = 0; j < group; ++j)
          work.slots.push_back({row * hq + h * group + j, g.prefix_len});
      add_items(begin, work.slots.size(), h, g.block_table_start, range);
    }
  }

  // Split any range longer than an even share of its kind's work (never below
  // min_split tokens): with many short items (decode rows) and a few long ones
  // (relay prefixes), the long ones would otherwise run alone at the end. Narrow
  // items aim at items_per_sm per multiprocessor (a warp each), wide ones at a
  // quarter of that (a CTA each). A narrow range at least twice four such shares
  // long (a long context at a small batch; any range of a tiny step) runs in units
  // of its own in the wide layout instead, in pieces of four shares: the same share
  // of a CTA's time, a quarter of the partials to merge. So does every narrow range
  // when the step is small and that is faster as estimated by makespan() (a relay
  // step at batch 1 then cuts its own tokens and its prefix as a paged step cuts the
  // two together). Boundaries fall on whole stages.
  int64_t narrow_len = 0, wide_len = 0;
  for (const Unsplit& u : base) (u.slot_count <= kNarrowSlots ? narrow_len : wide_len) += u.kv_len;
  auto chunk_for = [&](int64_t total, int64_t target_items, int32_t align) {
    if (!options.split || total == 0) return int32_t(1 << 30);
    const int64_t per_item = (total + target_items - 1) / target_items;
    return align_up(std::max<int64_t>(options.min_split, per_item), align);
  };
  const int64_t narrow_items = int64_t(options.num_sms) * options.items_per_sm;
  const int64_t ctas = std::max<int64_t>(narrow_items / kPackItems, 1);
  Cut cut{chunk_for(wide_len, ctas, kWideTileTokens),
          chunk_for(kPackItems * narrow_len, narrow_items, kWideTileTokens),
          chunk_for(narrow_len, narrow_items, kPackTileTokens), INT64_MAX};
  if (options.split) {
    cut.long_narrow = 2 * int64_t(cut.alone_chunk);
    // Units made when every narrow range runs alone in pieces of `chunk` tokens.
    auto units_at = [&](int32_t chunk) {
      int64_t n = 0;
      for (const Unsplit& u : base) {
        const RangeCut rc = cut_range(u, Cut{cut.wide_chunk, chunk, cut.narrow_chunk, 0});
        n += (u.kv_len + rc.chunk - 1) / rc.chunk;
      }
      return n;
    };
    int32_t longest = 0;
    for (const Unsplit& u : base)
      if (u.slot_count <= kNarrowSlots) longest = std::max(longest, u.kv_len);
    // A small step: at most two units per CTA with every narrow range alone at the
    // share. Three candidates (this runs for every step, so no wider search): the
    // usual cut, every range alone at the share, and every range alone in the
    // shortest pieces that make one unit per CTA at most (found by bisection: the
    // count of units only falls as the pieces grow).
    if (narrow_len > 0 && units_at(cut.alone_chunk) <= 2 * ctas) {
      int32_t lo = cut.alone_chunk,
              hi = align_up(std::max(longest, cut.alone_chunk), kWideTileTokens);
      while (lo < hi) {
        const int32_t mid = align_up((int64_t(lo) + hi) / 2, kWideTileTokens);
        if (mid >= hi) break;
        if (units_at(mid) <= ctas)
          hi = mid;
        else
          lo = mid + kWideTileTokens;
      }
      int64_t best = makespan(base, cut, ctas);
      for (int32_t chunk : {cut.alone_chunk, hi}) {
        const Cut all_alone{cut.wide_chunk, chunk, cut.narrow_chunk, 0};
        const int64_t time = makespan(base, all_alone, ctas);
        if (time < best) {
          best = time;
          cut = all_alone;
        }
      }
    }
  }

  const int32_t rows = std::max(plan.num_rows(), options.num_rows);
  std::vector<int32_t> counts(size_t(rows) * hq, 0);
  std::vector<AttentionItem> narrow, wide;  // packed, and alone in a unit
  for (Unsplit& u : base) {
    const RangeCut rc = cut_range(u, cut);
    for (int32_t b = 0; b < u.kv_len; b += rc.chunk, ++u.pieces) {
      const AttentionItem item{u.slot_offset,
                               int16_t(u.slot_count),
                               int16_t(u.pieces),
                               u.kv_head,
                               u.table_start,
                               b,
                               std::min(u.kv_len, b + rc.chunk),
                               u.prefix_table,
                               u.prefix_len};
      (rc.alone ? wide : narrow).push_back(item);
    }
    for (int32_t i = 0; i < u.slot_count; ++i)
      counts[size_t(work.slots[u.slot_offset + i].row_head)] += u.pieces;
  }
  work.num_items = int32_t(narrow.size() + wide.size());

  // Partials: an output's are contiguous, [first, first + parts), one range's pieces
  // after another; a slot starts its range's pieces at partial_base.
  std::vector<int32_t> first(counts.size(), 0), fill(counts.size(), 0);
  for (size_t o = 0; o < counts.size(); ++o) {
    first[o] = work.num_partials;
    work.num_partials += counts[o];
    if (counts[o] > 1) work.merges.push_back({int32_t(o), first[o], counts[o]});
  }
  for (const Unsplit& u : base)
    for (int32_t i = 0; i < u.slot_count; ++i) {
      QuerySlot& slot = work.slots[size_t(u.slot_offset + i)];
      const size_t o = size_t(slot.row_head);
      slot.parts = counts[o];
      slot.partial_base = first[o] + fill[o];
      fill[o] += u.pieces;
    }

  // Units: each wide item (and long narrow range) alone; narrow items longest first,
  // packed in fours so that a pack's items take about as many stages each (a pack
  // lasts as long as its longest). CTAs claim units in list order, so the long ones
  // start in the first wave and the short ones fill in behind them (a short one
  // first would leave a long one for the tail).
  std::vector<int32_t> narrow_stages(narrow.size());
  for (size_t i = 0; i < narrow.size(); ++i)
    narrow_stages[i] = stages_of(narrow[i], kPackTileTokens);
  const std::vector<int32_t> by_length = largest_first(narrow_stages);
  std::vector<AttentionUnit> units;
  units.reserve(wide.size() + (narrow.size() + kPackItems - 1) / kPackItems);
  for (const AttentionItem& item : wide) {
    AttentionUnit& unit = units.emplace_back();
    std::fill(std::begin(unit.items), std::end(unit.items), item);
    unit.stages = stages_of(item, kWideTileTokens);
  }
  for (size_t i = 0; i < by_length.size(); i += kPackItems) {
    AttentionUnit& unit = units.emplace_back();
    unit.packed = 1;
    for (size_t j = i; j < std::min(by_length.size(), i + kPackItems); ++j) {
      unit.items[j - i] = narrow[size_t(by_length[j])];
      unit.stages = std::max(unit.stages, narrow_stages[size_t(by_length[j])]);
    }
  }
  // Then all of them longest first. (Interleaving the kinds evenly instead, so that
  // prefix units, which do the most math per byte, share multiprocessors with
  // packs, measured slower: up to 27% at 8192-token prefixes, as the long prefix
  // units then start late and finish last. Running every prefix unit first, so that
  // a decode row's own item could merge its output itself once the prefix pieces
  // were in, measured 0-34% slower: the merge at the end of the launch is cheaper
  // than the waits and the lost order.)
  std::vector<int32_t> unit_stages(units.size());
  for (size_t i = 0; i < units.size(); ++i) unit_stages[i] = units[i].stages;
  work.units.reserve(units.size());
  for (int32_t u : largest_first(unit_stages)) work.units.push_back(units[size_t(u)]);
  return work;
}

AttentionWorkSummary summarize(const AttentionWork& work, int64_t ctas, int32_t head_dim) {
  AttentionWorkSummary summary;
  std::priority_queue<int64_t, std::vector<int64_t>, std::greater<>> free_at;
  for (int64_t i = 0; i < std::max<int64_t>(ctas, 1); ++i) free_at.push(0);
  for (const AttentionUnit& unit : work.units) {
    ++summary.units;
    summary.packed_units += unit.packed;
    summary.stages += unit.stages;
    const int64_t done = free_at.top() + unit.stages + 1;
    free_at.pop();
    free_at.push(done);
    summary.makespan_stages = std::max(summary.makespan_stages, done);
  }
  for (const MergeOutput& merge : work.merges) summary.partials += merge.parts;
  summary.partial_bytes = 2.0 * double(summary.partials) * (double(head_dim) + 1) * sizeof(float);
  return summary;
}

}  // namespace relayllm::cuda
