#include "relayllm/backend/relay_group_planner.h"

#include <algorithm>
#include <map>

#include "relayllm/common/error.h"

namespace relayllm {

RelayCostModel RelayCostModel::for_shape(int32_t block_size, int32_t num_heads,
                                         int32_t num_kv_heads, int32_t head_dim,
                                         int32_t kv_elem_bytes) {
  RELAYLLM_CHECK(
      block_size > 0 && num_heads > 0 && num_kv_heads > 0 && head_dim > 0 && kv_elem_bytes > 0,
      "relay cost model: bad shape (block {}, heads {}/{}, head_dim {}, {} bytes)", block_size,
      num_heads, num_kv_heads, head_dim, kv_elem_bytes);
  RelayCostModel m;
  m.block_size = block_size;
  // A partial is o [heads, head_dim] and lse [heads] in fp32, written once and read once.
  const double partial_bytes = 2.0 * 4.0 * num_heads * (head_dim + 1);
  const double kv_row_bytes = 2.0 * num_kv_heads * head_dim * kv_elem_bytes;
  m.merge_rows_per_query = partial_bytes / kv_row_bytes;
  return m;
}

double RelayCostModel::paged_rows(int64_t tokens, std::span<const int32_t> query_lens) const {
  double passes = 0;
  for (int32_t q : query_lens) passes += (q + query_tile - 1) / query_tile;
  return double(tokens) * passes;
}

double RelayCostModel::relay_rows(int64_t tokens, std::span<const int32_t> query_lens) const {
  int64_t rows = 0;
  for (int32_t q : query_lens) rows += q;
  return double(tokens) * double((rows + query_tile - 1) / query_tile) +
         merge_rows_per_query * double(rows);
}

namespace {

class Planner {
 public:
  Planner(std::span<const RelayCandidate> c, const RelayCostModel& cost) : c_(c), cost_(cost) {
    plan_.leaf.assign(c.size(), -1);
    plan_.own_first_block.assign(c.size(), 0);
  }

  // `members` share blocks [0, shared) and have levels_left automatic levels; blocks
  // before `start` belong to formed groups (the innermost is `parent`).
  void visit(std::vector<int32_t> members, int32_t start, int32_t shared, int32_t parent,
             int32_t root, int32_t levels_left) {
    if (members.size() < 2 || levels_left <= 0) {
      for (int32_t m : members) leave(m, start, parent);
      return;
    }
    // Extend the run while every member may group the block and holds the same one.
    int32_t end = shared;
    for (;; ++end) {
      bool same = true;
      for (int32_t m : members)
        same = same && c_[size_t(m)].groupable_blocks > end &&
               c_[size_t(m)].blocks[size_t(end)] == c_[size_t(members[0])].blocks[size_t(end)];
      if (!same) break;
    }
    int32_t next_start = start, next_parent = parent, next_levels = levels_left;
    if (end > start) {
      std::vector<int32_t> query_lens;
      for (int32_t m : members) query_lens.push_back(c_[size_t(m)].query_len);
      const int64_t tokens = int64_t(end - start) * cost_.block_size;
      const double saved =
          cost_.paged_rows(tokens, query_lens) - cost_.relay_rows(tokens, query_lens);
      if (saved > 0) {
        RelayGroup g;
        g.parent = parent;
        g.root = root;
        g.first_block = start;
        g.num_blocks = end - start;
        g.members = members;
        g.saved_rows = saved;
        next_parent = int32_t(plan_.groups.size());
        plan_.groups.push_back(std::move(g));
        next_start = end;
        --next_levels;
      }
    }
    // Below the run, members split by the block they hold next; a member alone (or one
    // whose groupable blocks end here) keeps the rest as its own range. A run not formed
    // is carried down: a child group starts where the last formed one ends.
    std::map<int32_t, std::vector<int32_t>> by_block;
    for (int32_t m : members) {
      if (c_[size_t(m)].groupable_blocks > end)
        by_block[c_[size_t(m)].blocks[size_t(end)]].push_back(m);
      else
        leave(m, next_start, next_parent);
    }
    for (auto& [block, sub] : by_block) {
      if (sub.size() < 2) {
        leave(sub[0], next_start, next_parent);
        continue;
      }
      int32_t levels = next_levels;
      for (int32_t m : sub)
        levels = std::min(levels, c_[size_t(m)].max_levels - depth(next_parent));
      visit(std::move(sub), next_start, end + 1, next_parent, root, levels);
    }
  }

  RelayGroupPlan take() { return std::move(plan_); }

  int32_t depth(int32_t group) const {
    int32_t d = 0;
    for (; group >= 0; group = plan_.groups[size_t(group)].parent) ++d;
    return d;
  }

 private:
  void leave(int32_t m, int32_t own_first, int32_t leaf) {
    plan_.own_first_block[size_t(m)] = own_first;
    plan_.leaf[size_t(m)] = leaf;
  }

  std::span<const RelayCandidate> c_;
  const RelayCostModel& cost_;
  RelayGroupPlan plan_;
};

}  // namespace

RelayGroupPlan plan_relay_groups(std::span<const RelayCandidate> candidates,
                                 const RelayCostModel& cost) {
  for (size_t i = 0; i < candidates.size(); ++i)
    RELAYLLM_CHECK(candidates[i].groupable_blocks >= 0 &&
                       size_t(candidates[i].groupable_blocks) <= candidates[i].blocks.size(),
                   "relay planner: sequence {} may group {} blocks but holds {}", i,
                   candidates[i].groupable_blocks, candidates[i].blocks.size());
  Planner planner(candidates, cost);
  // Sequences under different roots never share automatic groups.
  std::map<int32_t, std::vector<int32_t>> by_root;
  for (size_t i = 0; i < candidates.size(); ++i) by_root[candidates[i].root].push_back(int32_t(i));
  for (auto& [root, members] : by_root) {
    int32_t levels = 1 << 20;
    for (int32_t m : members) levels = std::min(levels, candidates[size_t(m)].max_levels);
    planner.visit(std::move(members), 0, 0, -1, root, levels);
  }
  return planner.take();
}

}  // namespace relayllm
