#include "relayllm/backend/batch_plan_builder.h"

#include <algorithm>

#include "relayllm/common/error.h"

namespace relayllm {

BatchPlanBuilder::BatchPlanBuilder(int32_t block_size) {
  RELAYLLM_CHECK(block_size > 0, "batch plan: block size {} must be positive", block_size);
  plan_.block_size = block_size;
}

int32_t BatchPlanBuilder::prefix_group(int64_t key, int32_t prefix_len,
                                       std::span<const int32_t> blocks) {
  if (auto it = group_of_key_.find(key); it != group_of_key_.end()) return it->second;
  const int32_t bs = plan_.block_size;
  RELAYLLM_CHECK(int64_t(blocks.size()) * bs >= prefix_len,
                 "batch plan: prefix of {} tokens given {} blocks of {}", prefix_len, blocks.size(),
                 bs);
  const int32_t index = int32_t(plan_.prefix_groups.size());
  group_of_key_.emplace(key, index);
  PlannedPrefixGroup group;
  group.prefix_len = prefix_len;
  group.block_table_start = int32_t(plan_.block_tables.size());
  group.num_blocks = int32_t(blocks.size());
  plan_.block_tables.insert(plan_.block_tables.end(), blocks.begin(), blocks.end());
  plan_.prefix_groups.push_back(std::move(group));
  return index;
}

int32_t BatchPlanBuilder::nested_group(int32_t parent, std::span<const int32_t> blocks) {
  RELAYLLM_CHECK(parent >= -1 && parent < int32_t(plan_.prefix_groups.size()),
                 "batch plan: no parent group {}", parent);
  RELAYLLM_CHECK(!blocks.empty(), "batch plan: a nested group needs blocks");
  PlannedPrefixGroup group;
  group.prefix_len = int32_t(blocks.size()) * plan_.block_size;
  group.block_table_start = int32_t(plan_.block_tables.size());
  group.num_blocks = int32_t(blocks.size());
  group.parent = parent;
  plan_.block_tables.insert(plan_.block_tables.end(), blocks.begin(), blocks.end());
  plan_.prefix_groups.push_back(std::move(group));
  return int32_t(plan_.prefix_groups.size()) - 1;
}

int32_t BatchPlanBuilder::max_depth() const {
  int32_t deepest = 0;
  for (const PlannedPrefixGroup& g : plan_.prefix_groups) {
    int32_t d = 1;
    for (int32_t p = g.parent; p >= 0; p = plan_.prefix_groups[size_t(p)].parent) ++d;
    deepest = std::max(deepest, d);
  }
  return deepest;
}

int32_t BatchPlanBuilder::add_sequence(const SequenceRows& rows) {
  const int32_t bs = plan_.block_size;
  const int32_t n = int32_t(rows.token_ids.size());
  RELAYLLM_CHECK(rows.prefix_group >= -1 && rows.prefix_group < int32_t(plan_.prefix_groups.size()),
                 "batch plan: no prefix group {}", rows.prefix_group);
  PlannedSequence ps;
  ps.query_start = plan_.num_rows();
  ps.query_len = n;
  ps.context_len = rows.first + n;
  ps.prefix_group = rows.prefix_group;
  ps.position_offset = rows.position_offset >= 0 ? rows.position_offset
                       : rows.prefix_group >= 0
                           ? plan_.prefix_groups[size_t(rows.prefix_group)].prefix_len
                           : 0;
  ps.block_table_start = int32_t(plan_.block_tables.size());
  ps.num_blocks = (ps.context_len + bs - 1) / bs;
  RELAYLLM_CHECK(int32_t(rows.blocks.size()) >= ps.num_blocks,
                 "batch plan: a context of {} tokens needs {} blocks, the table has {}",
                 ps.context_len, ps.num_blocks, rows.blocks.size());
  plan_.block_tables.insert(plan_.block_tables.end(), rows.blocks.begin(),
                            rows.blocks.begin() + ps.num_blocks);
  for (int32_t r = 0; r < n; ++r) {
    const int32_t j = rows.first + r;
    plan_.token_ids.push_back(rows.token_ids[size_t(r)]);
    plan_.positions.push_back(ps.position_offset + j);
    plan_.slot_mapping.push_back(int64_t(rows.blocks[size_t(j / bs)]) * bs + j % bs);
  }
  for (int32_t g = rows.prefix_group; g >= 0; g = plan_.prefix_groups[size_t(g)].parent) {
    std::vector<int32_t>& group_rows = plan_.prefix_groups[size_t(g)].query_rows;
    for (int32_t r = 0; r < n; ++r) group_rows.push_back(ps.query_start + r);
  }
  plan_.sequences.push_back(ps);
  return ps.query_start;
}

void BatchPlanBuilder::add_logit_rows(int32_t first_row, int32_t count) {
  RELAYLLM_CHECK(first_row >= 0 && count >= 0 && first_row + count <= plan_.num_rows(),
                 "batch plan: logit rows [{}, {}) outside the {} rows", first_row,
                 first_row + count, plan_.num_rows());
  for (int32_t r = 0; r < count; ++r) plan_.logit_rows.push_back(first_row + r);
}

}  // namespace relayllm
