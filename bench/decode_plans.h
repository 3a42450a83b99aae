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
#include "relayllm/backend/batch_plan_builder.h"
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
  BatchPlanBuilder builder(kBlock);
  const int own_blocks = (own + kBlock - 1) / kBlock;
  const int prefix_blocks = prefix / kBlock;
  int32_t group = -1;
  if (relay) {
    std::vector<int32_t> prefix_table;
    for (int j = 0; j < prefix_blocks; ++j) prefix_table.push_back(prefix_base + j);
    group = builder.prefix_group(0, prefix, prefix_table);
  }
  const int32_t token = 0;
  for (int b = 0; b < batch; ++b) {
    std::vector<int32_t> table;  // without relay, the row's copy of the prefix comes first
    if (!relay)
      for (int j = 0; j < prefix_blocks; ++j) table.push_back(copy_base + b * prefix_blocks + j);
    for (int j = 0; j < own_blocks; ++j) table.push_back(own_base + b * own_blocks + j);
    const int context = relay ? own : prefix + own;
    builder.add_sequence({std::span(&token, 1), context - 1, table, group, relay ? prefix : 0});
  }
  return builder.take();
}

}  // namespace relayllm::bench
