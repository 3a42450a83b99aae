// The flat description of one forward step that the scheduler's plan builder
// produces and a backend executes. Backends know nothing about requests: only
// token rows, block tables and prefix groups.
//
// Token rows are the concatenation of every scheduled sequence's new tokens.
// A sequence's "own" tokens are all its tokens after its relay groups (all of
// them when it has none); its own block table holds own tokens only, and own token
// j sits at position position_offset + j.
#pragma once

#include <cstdint>
#include <vector>

namespace relayllm {

struct PlannedSequence {
  int32_t query_start = 0;        // first row in the step's token rows
  int32_t query_len = 0;          // new tokens this step
  int32_t context_len = 0;        // own tokens in the KV cache once this step's are written
  int32_t position_offset = 0;    // relay prefix length S, or 0
  int32_t block_table_start = 0;  // index into BatchPlan::block_tables
  int32_t num_blocks = 0;         // own blocks, covering context_len tokens
  // Index into BatchPlan::prefix_groups of the sequence's innermost group, -1 without
  // relay; the sequence also belongs to that group's ancestors (its parent chain).
  int32_t prefix_group = -1;
};

// One relay group used by this step: a registered prefix (positions 0..prefix_len-1),
// or a run of KV blocks that several sequences share, read once for all query rows of
// all its sequences. Groups nest: a child's tokens follow its parent's, and its rows are
// also rows of the parent, so a row merges one (o, lse) per level plus its own.
struct PlannedPrefixGroup {
  int32_t prefix_len = 0;  // tokens of this level (a nested level: whole blocks)
  int32_t block_table_start = 0;
  int32_t num_blocks = 0;
  std::vector<int32_t> query_rows;  // every token row of the group's sequences
  int32_t parent = -1;              // the enclosing group, or -1 for an outermost one
};

struct BatchPlan {
  std::vector<int32_t> token_ids;     // one per row
  std::vector<int32_t> positions;     // one per row (RoPE position)
  std::vector<int64_t> slot_mapping;  // one per row: block * block_size + offset in the paged pool
  std::vector<PlannedSequence> sequences;
  std::vector<PlannedPrefixGroup> prefix_groups;
  std::vector<int32_t> block_tables;  // own and prefix block ids, referenced by ranges above
  std::vector<int32_t> logit_rows;    // rows whose logits the step returns, in order
  int32_t block_size = 16;

  int32_t num_rows() const { return int32_t(token_ids.size()); }
};

}  // namespace relayllm
