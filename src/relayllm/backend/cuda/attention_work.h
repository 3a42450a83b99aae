// The host side of the CUDA attention: turns a BatchPlan into a flat list of work
// units that one persistent kernel launch executes for own tokens and relay
// prefixes alike.
//
// An item is (a set of query slots sharing one KV head and one block table, a
// token range of that table). The slots of an item are packed as the M dimension
// of the tensor-core tiles: for a relay prefix, every query row of the group times
// the query heads of the KV head (the GQA group), so each KV tile read from memory
// serves all of them; for a sequence's own tokens, its rows times the GQA group.
// Long ranges are split (split-KV) so that small batches still fill the GPU; every
// item yields one partial (o, lse) per slot, and a relay prefix is just more
// partials of the same outputs. Relay groups nest (BatchPlan groups with parents:
// a system prompt, inside it a document, then each request's own tokens): every
// level is one more range of its rows' outputs, with items over the level's blocks
// for all rows of the sequences below it, so a row of a depth-3 tree has four
// ranges (three levels and its own) merged by lse like split pieces.
//
// A unit is what a CTA takes at a time: either one item alone (a wide item of up
// to kWideSlots slots, every warp of the CTA on its own 16 rows against the same
// KV tile; or a long narrow range, one warp computing) or a pack of up to
// kPackItems narrow items (at most kNarrowSlots slots each: a decode row's GQA
// group), warp w running item w over its own slice of every stage. All kinds share
// one launch, so the prefix and the own tokens stream back to back without a
// second kernel's start and end.
//
// No unit waits for another. An output with a single partial is written by its
// item; the partials of the others are counted as they arrive and merged at the
// end of the launch by the CTAs that have run out of units.
//
// An outermost relay prefix with a single sequence in the step saves no bytes, so
// its tokens are joined to that sequence's own tokens as one range read through
// both block tables: the step is cut exactly as without relay (relay at batch
// one costs what paged attention costs).
#pragma once

#include <cstdint>
#include <vector>

#include "relayllm/backend/batch_plan.h"

namespace relayllm::cuda {

// 32 bytes: two 16-byte loads.
struct AttentionItem {
  int32_t slot_offset = 0;  // first query slot of the item
  int16_t slot_count = 0;   // at most the unit's rows per item (0: no item)
  int16_t split = 0;  // which piece of its slots' range: their partial is partial_base + split
  int32_t kv_head = 0;
  int32_t table_start = 0;  // into BatchPlan::block_tables
  int32_t kv_begin = 0;     // token range [kv_begin, kv_end) of the range
  int32_t kv_end = 0;
  // A joined range: tokens [0, prefix_len) are a relay prefix's, read through the
  // table at prefix_table; token t >= prefix_len is token t - prefix_len of the
  // table at table_start. prefix_len 0: the range is the table's alone.
  int32_t prefix_table = 0;
  int32_t prefix_len = 0;
};

struct QuerySlot {
  int32_t row_head;          // row * num_heads + head: the query and the output it feeds
  int32_t visible;           // tokens [0, visible) of the range are visible to this query
  int32_t parts = 1;         // partials of this output (1: the item writes the output itself)
  int32_t partial_base = 0;  // the partial of this slot's range's first piece
};

// An output with several partials: they are partials [first, first + parts), one
// per piece of each range the output sees (its own tokens, each relay level).
struct MergeOutput {
  int32_t row_head;
  int32_t first;
  int32_t parts;
  int32_t reserved = 0;
};

// Query slots per item: a narrow item fills one warp's 16 rows, a wide one the
// CTA's (a build may override it for a tuning sweep, in the C++ and CUDA flags
// alike: -DRELAYLLM_WIDE_SLOTS=32).
#ifndef RELAYLLM_WIDE_SLOTS
#define RELAYLLM_WIDE_SLOTS 64
#endif
inline constexpr int32_t kNarrowSlots = 16;
inline constexpr int32_t kWideSlots = RELAYLLM_WIDE_SLOTS;
inline constexpr int32_t kPackItems = kWideSlots / kNarrowSlots;  // one per warp

// Tokens of one ring stage: a wide item's KV tile, and a packed item's slice of it.
inline constexpr int32_t kWideTileTokens = 64;
inline constexpr int32_t kPackTileTokens = kWideTileTokens / kPackItems;

struct AttentionUnit {
  AttentionItem items[kPackItems];  // alone: items[0], repeated (every warp reads its own entry)
  int32_t packed = 0;               // 1: a pack of narrow items, 0: one item alone
  int32_t stages = 0;               // ring stages the unit takes (its longest item's)
  int32_t reserved[2] = {0, 0};
};

struct AttentionWork {
  std::vector<QuerySlot> slots;
  std::vector<AttentionUnit> units;  // in the order CTAs claim them
  std::vector<MergeOutput> merges;   // the outputs with more than one partial
  int32_t num_partials = 0;          // partial (o, lse) buffers the units address
  int32_t num_items = 0;
};

struct AttentionWorkOptions {
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t num_sms = 132;
  int32_t min_split = 64;  // shortest KV range worth its own item (tokens)
  // Split long ranges so that the step's tokens would fill this many narrow items
  // (a warp's worth of work) per multiprocessor (attention_work.cc).
  int32_t items_per_sm = 8;
  bool split = true;
  int32_t num_rows = 0;  // rows of the step's tensors (padding included); 0: the plan's
};

AttentionWork build_attention_work(const BatchPlan& plan, const AttentionWorkOptions& options);

// What a work list asks of the GPU, for the benchmark's records: its units, the
// stages a launch of `ctas` CTAs takes when each claims the next unit in list order
// as it frees up (a unit costing its stages plus one for its start and end), and the
// partial results written and read back by the merge (fp32 o of head_dim values and
// one lse each) beyond the bytes of the floor.
struct AttentionWorkSummary {
  int64_t units = 0, packed_units = 0;
  int64_t stages = 0;           // all units' stages together
  int64_t makespan_stages = 0;  // the longest CTA's, claims in list order
  int64_t partials = 0;         // written by items whose outputs have several parts
  double partial_bytes = 0;     // written and read once each
};
AttentionWorkSummary summarize(const AttentionWork& work, int64_t ctas, int32_t head_dim);

}  // namespace relayllm::cuda
