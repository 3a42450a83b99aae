// The one way a BatchPlan is assembled (by the engine, the tests and the
// benchmarks): sequences' new rows with their slot mapping and own block tables,
// relay prefix groups with their tables and query rows, and the logit rows.
// Ranges into block_tables, query starts and group rows are all derived here, so
// callers cannot get them out of step.
#pragma once

#include <cstdint>
#include <map>
#include <span>

#include "relayllm/backend/batch_plan.h"

namespace relayllm {

// One sequence's rows in a step.
struct SequenceRows {
  std::span<const int32_t> token_ids;  // the new tokens, one row each
  int32_t first = 0;                   // own tokens already in the KV cache before them
  // The sequence's own block table: the blocks that cover its context once these rows
  // are written are used; own token j goes to slot blocks[j / bs] * bs + j % bs.
  std::span<const int32_t> blocks;
  int32_t prefix_group = -1;  // the innermost group (prefix_group(), nested_group()), or -1
  // Position of own token 0; -1: the group's prefix_len (0 without). Give it with nested groups.
  int32_t position_offset = -1;
};

class BatchPlanBuilder {
 public:
  explicit BatchPlanBuilder(int32_t block_size);

  // The group of the relay prefix identified by `key` (a prefix id): created with its
  // table on first use, shared by every sequence that names it afterwards.
  int32_t prefix_group(int64_t key, int32_t prefix_len, std::span<const int32_t> blocks);
  // A group nested in `parent` (or outermost with -1) over whole blocks, created anew.
  int32_t nested_group(int32_t parent, std::span<const int32_t> blocks);
  // Levels of nesting in the plan so far (0: no groups).
  int32_t max_depth() const;
  // Adds the rows; returns the index of the first one.
  int32_t add_sequence(const SequenceRows& rows);
  // The step returns the logits of these rows, in the order they are added.
  void add_logit_rows(int32_t first_row, int32_t count);

  int32_t num_rows() const { return plan_.num_rows(); }
  const BatchPlan& plan() const { return plan_; }
  BatchPlan take() { return std::move(plan_); }

 private:
  BatchPlan plan_;
  std::map<int64_t, int32_t> group_of_key_;
};

}  // namespace relayllm
