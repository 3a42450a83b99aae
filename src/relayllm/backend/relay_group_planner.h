// Automatic relay groups: each step, the runs of leading KV blocks that scheduled
// sequences share physically (through the prefix cache) become nested relay
// groups, where the cost rule says a group reads fewer bytes than paged attention.
//
// A group covers a block range [first_block, first_block + num_blocks) of its
// members' own block tables; members of a child group are members of its parent and
// the child's range starts where the parent's ends. A sequence's own range (read by
// its causal pass) starts after its deepest group. The planner knows nothing of
// requests: only block tables, how many leading blocks may be grouped, and rows.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace relayllm {

// The bytes model of docs/relay_attention.md, in units of one KV row (K and V of one
// token, all KV heads, one layer).
struct RelayCostModel {
  int32_t block_size = 16;
  // Query rows that share one pass over a sequence's KV in paged attention (the
  // query tile of the prefill kernel; a decode row is a pass of its own).
  int32_t query_tile = 64;
  // Extra traffic of one more level for one query row: its partial (o, lse) in fp32
  // written and read back by the merge, in KV rows.
  double merge_rows_per_query = 2.0;

  // merge_rows_per_query from the attention shape and the KV element size.
  static RelayCostModel for_shape(int32_t block_size, int32_t num_heads, int32_t num_kv_heads,
                                  int32_t head_dim, int32_t kv_elem_bytes);
  // KV rows paged attention reads for `tokens` shared tokens of these members.
  double paged_rows(int64_t tokens, std::span<const int32_t> query_lens) const;
  // KV rows a group over `tokens` tokens reads for these members, merges included.
  double relay_rows(int64_t tokens, std::span<const int32_t> query_lens) const;
};

struct RelayCandidate {
  std::span<const int32_t> blocks;  // the sequence's own block table
  // Leading blocks that may join a group: full blocks whose KV is written before
  // the step (a group's tokens must precede every query row of every member).
  int32_t groupable_blocks = 0;
  int32_t query_len = 0;  // the sequence's rows this step
  // Groups grow inside this one: the plan group of the sequence's registered prefix,
  // or -1. Only sequences with the same root share automatic groups.
  int32_t root = -1;
  // Automatic levels this sequence may join (a backend's nesting limit minus the
  // registered prefix's level).
  int32_t max_levels = 1 << 20;
};

struct RelayGroup {
  int32_t parent = -1;  // index into RelayGroupPlan::groups, or -1 (then `root` is the parent)
  int32_t root = -1;    // the members' root
  int32_t first_block = 0;
  int32_t num_blocks = 0;
  std::vector<int32_t> members;  // candidate indices
  double saved_rows = 0;         // paged_rows - relay_rows, > 0
};

struct RelayGroupPlan {
  std::vector<RelayGroup> groups;        // parents before their children
  std::vector<int32_t> leaf;             // per candidate: its deepest group, or -1
  std::vector<int32_t> own_first_block;  // per candidate: first block of its own range
};

RelayGroupPlan plan_relay_groups(std::span<const RelayCandidate> candidates,
                                 const RelayCostModel& cost);

}  // namespace relayllm
