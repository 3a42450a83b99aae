// The host side of the CUDA attention: turns a BatchPlan into a flat work list
// that one kernel executes for own tokens and relay prefixes alike.
//
// A work item is (a set of query slots sharing one KV head and one block table,
// a token range of that table). The slots of an item are packed as the M dimension
// of the tensor-core tiles: for a relay prefix, every query row of the group times
// the query heads of the KV head (the GQA group), so each KV tile read from memory
// serves all of them; for a sequence's own tokens, its rows times the GQA group.
// Long ranges are split (split-KV) so that small batches still fill the GPU; every
// item writes one partial (o, lse) per slot and the partials of each (row, head)
// are combined by log-sum-exp. A relay prefix is thus just more partials.
//
// The wide items run first. A narrow item that holds the only narrow partial of
// each of its slots (a decode row's own tokens, unsplit) then finalizes: it merges
// its result with the slots' other (wide: relay prefix) partials and writes the
// output itself. Only the outputs left over go through the separate merge kernel.
#pragma once

#include <cstdint>
#include <vector>

#include "relayllm/backend/batch_plan.h"

namespace relayllm::cuda {

struct AttentionItem {
  int32_t slot_offset;     // first query slot of the item
  int32_t slot_count;      // at most the kernel's tile height
  int32_t kv_head;
  int32_t table_start;     // into BatchPlan::block_tables
  int32_t kv_begin;        // token range [kv_begin, kv_end) of the table
  int32_t kv_end;
  int32_t partial_offset;  // partial of slot i is partial_offset + i
  int32_t flags = 0;       // kItemFinalizes
};

// The item writes its slots' outputs, merged with their other partials, instead of
// leaving its partial to the merge kernel.
inline constexpr int32_t kItemFinalizes = 1;

struct QuerySlot {
  int32_t row_head;  // row * num_heads + head: the query and the output it feeds
  int32_t visible;   // tokens [0, visible) of the table are visible to this query
  // For a slot of a finalizing item: its output's other partials, the splits of one
  // wide item, at prefix_first + j * prefix_stride for j < prefix_count (none: 0).
  int32_t prefix_first = 0;
  int32_t prefix_stride = 0;
  int32_t prefix_count = 0;
};

struct AttentionWork {
  std::vector<QuerySlot> slots;
  std::vector<AttentionItem> narrow;  // items of at most kNarrowSlots slots
  std::vector<AttentionItem> wide;    // items of at most kWideSlots slots
  std::vector<int32_t> merge_offsets;  // CSR over row_head: partials of each output
  std::vector<int32_t> merge_partials;
  std::vector<int32_t> merge_outputs;  // row_heads the merge kernel writes (none finalized them)
  int32_t num_partials = 0;
};

// Query slots per item: the narrow kernel's tile height (one warp) and the wide
// kernel's (a build may override it for a tuning sweep, in the C++ and CUDA flags
// alike: -DRELAYLLM_WIDE_SLOTS=32).
#ifndef RELAYLLM_WIDE_SLOTS
#define RELAYLLM_WIDE_SLOTS 64
#endif
inline constexpr int32_t kNarrowSlots = 16;
inline constexpr int32_t kWideSlots = RELAYLLM_WIDE_SLOTS;

struct AttentionWorkOptions {
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t num_sms = 132;
  int32_t min_split = 256;   // shortest KV range worth its own item (tokens)
  int32_t items_per_sm = 4;  // split long ranges toward this many narrow items per multiprocessor
  int32_t wide_items_per_sm = 2;  // and this many wide ones (the wide kernel's occupancy)
  bool split = true;
  // When the step has relay prefixes: put the narrow items in the wide list too, so
  // that one launch streams the prefixes and then the own tokens without a second
  // kernel's start and end; no item finalizes, every output goes to the merge.
  bool own_in_wide = false;
  int32_t num_rows = 0;      // rows of the step's tensors (padding included); 0: the plan's
};

AttentionWork build_attention_work(const BatchPlan& plan, const AttentionWorkOptions& options);

}  // namespace relayllm::cuda
