// Helpers shared by the CPU and GPU model tests: the HF fixtures and a paged
// forward of one sequence, optionally split into a relay prefix and chunks.
#pragma once

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "relative_error.h"
#include "relayllm/backend/batch_plan_builder.h"
#include "relayllm/model/llama_model.h"

namespace relayllm::testing {

inline std::filesystem::path fixture_dir(const std::string& name) {
  return std::filesystem::path(RELAYLLM_SOURCE_DIR) / "tests/data/hf_fixtures" / name;
}

// Runs `tokens` through the paged forward: the first prefix_len tokens as a relay
// prefix (their own blocks, computed once), the rest as the sequence's own tokens
// in chunks of `chunk`. Returns the logits of every own position.
inline std::vector<std::vector<float>> run_paged(LlamaModel& model,
                                                 const std::vector<int32_t>& tokens,
                                                 int32_t prefix_len, int32_t chunk,
                                                 int32_t block_size = 4) {
  const int32_t kBlockSize = block_size;
  const int32_t n = int32_t(tokens.size());
  const int32_t prefix_blocks = (prefix_len + kBlockSize - 1) / kBlockSize;
  const int32_t own_blocks = (n - prefix_len + kBlockSize - 1) / kBlockSize;
  auto kv = model.allocate_kv_cache(prefix_blocks + own_blocks + 1, kBlockSize);
  // Own blocks are numbered after the prefix's, in reverse, so a table mix-up cannot pass.
  std::vector<int32_t> prefix_table, own_table;
  for (int32_t b = 0; b < prefix_blocks; ++b) prefix_table.push_back(b);
  for (int32_t b = 0; b < own_blocks; ++b) own_table.push_back(prefix_blocks + own_blocks - b);

  auto plan_for = [&](const std::vector<int32_t>& table, int32_t first, int32_t count,
                      int32_t offset, bool with_prefix, bool logits) {
    BatchPlanBuilder builder(kBlockSize);
    SequenceRows rows{std::span(tokens).subspan(size_t(offset + first), size_t(count)), first,
                      table, -1, offset};
    if (with_prefix) rows.prefix_group = builder.prefix_group(0, prefix_len, prefix_table);
    const int32_t first_row = builder.add_sequence(rows);
    if (logits) builder.add_logit_rows(first_row, count);
    return builder.take();
  };

  std::vector<float> logits;
  if (prefix_len > 0)
    model.forward(plan_for(prefix_table, 0, prefix_len, 0, false, false), kv, logits);
  std::vector<std::vector<float>> rows;
  const int64_t vocab = model.config().vocab_size;
  for (int32_t first = 0; first < n - prefix_len; first += chunk) {
    int32_t count = std::min(chunk, n - prefix_len - first);
    model.forward(plan_for(own_table, first, count, prefix_len, prefix_len > 0, true), kv, logits);
    for (int32_t r = 0; r < count; ++r)
      rows.emplace_back(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
  }
  return rows;
}

}  // namespace relayllm::testing
