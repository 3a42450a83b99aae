// The decode steps the attention benchmarks time: B decode rows, each with `own`
// tokens of its own context (the new token included) in blocks of kBlock tokens;
// with relay, one prefix group of P tokens (a multiple of the block) read through
// its own table, without, each row's table holding a copy of the prefix first.
// Block ids: the prefix from prefix_base, row b's own blocks from own_base, row b's
// prefix copy from copy_base (so a benchmark can lay the windows out in its pool).
#pragma once

#include <cstdint>
#include <string>

#include "relayllm/backend/backend.h"
#include "relayllm/common/error.h"

namespace relayllm::bench {

constexpr int kHeadDim = 128;
constexpr int kBlock = 16;

struct Shape {
  const char* name;
  int hq, hk;
};

inline Shape shape_named(const std::string& name) {
  if (name == "llama2-7b") return {"llama2-7b", 32, 32};
  if (name == "llama3-8b") return {"llama3-8b", 32, 8};
  fail("unknown attention shape '{}' (llama2-7b or llama3-8b)", name);
}

inline BatchPlan decode_plan(int batch, int prefix, int own, bool relay, int32_t prefix_base = 0,
                             int32_t own_base = 0, int32_t copy_base = 0) {
  BatchPlan plan;
  plan.block_size = kBlock;
  const int own_blocks = (own + kBlock - 1) / kBlock;
  const int prefix_blocks = prefix / kBlock;
  for (int b = 0; b < batch; ++b) {
    PlannedSequence seq;
    seq.query_start = b;
    seq.query_len = 1;
    seq.block_table_start = int32_t(plan.block_tables.size());
    if (relay) {
      seq.context_len = own;
      seq.position_offset = prefix;
      seq.prefix_group = 0;
    } else {
      seq.context_len = prefix + own;
      for (int j = 0; j < prefix_blocks; ++j)
        plan.block_tables.push_back(copy_base + b * prefix_blocks + j);
    }
    for (int j = 0; j < own_blocks; ++j) plan.block_tables.push_back(own_base + b * own_blocks + j);
    seq.num_blocks = int32_t(plan.block_tables.size()) - seq.block_table_start;
    plan.sequences.push_back(seq);
    plan.token_ids.push_back(0);
    plan.positions.push_back(prefix + own - 1);
    plan.slot_mapping.push_back(0);
  }
  if (relay) {
    PlannedPrefixGroup g;
    g.prefix_len = prefix;
    g.block_table_start = int32_t(plan.block_tables.size());
    g.num_blocks = prefix_blocks;
    for (int j = 0; j < prefix_blocks; ++j) plan.block_tables.push_back(prefix_base + j);
    for (int b = 0; b < batch; ++b) g.query_rows.push_back(b);
    plan.prefix_groups.push_back(g);
  }
  return plan;
}

}  // namespace relayllm::bench
