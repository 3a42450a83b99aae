// Random weights in a GGUF block format for the CPU kernel benchmarks: random quants, small
// positive fp16 scales (and Q4_1 minimums), so the dot products stay finite and realistic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "relayllm/backend/tensor.h"
#include "relayllm/common/half.h"

namespace relayllm::bench {

inline std::vector<std::byte> random_blocks(WeightFormat f, int64_t n, int64_t k,
                                            std::mt19937& rng) {
  const WeightBlockLayout layout = weight_block_layout(f);
  const int64_t blocks = n * k / layout.block_elements;
  std::vector<std::byte> bytes(size_t(blocks * layout.block_bytes));
  for (auto& b : bytes) b = std::byte(rng() & 0xff);
  for (int64_t i = 0; i < blocks; ++i) {
    std::byte* b = bytes.data() + i * layout.block_bytes;
    const uint16_t d = float_to_fp16(0.01f), m = float_to_fp16(-0.08f);
    std::memcpy(b, &d, 2);
    if (f == WeightFormat::kQ4_1) std::memcpy(b + 2, &m, 2);
  }
  return bytes;
}

}  // namespace relayllm::bench
