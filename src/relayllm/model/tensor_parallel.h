// Megatron-style sharding of the Llama family over `size` ranks: q/k/v and gate/up
// split by output rows (column-parallel), o and down by input columns (row-parallel,
// one all-reduce each); embedding, lm_head and norms replicated. KV heads split with
// their query heads; with fewer KV heads than ranks each rank holds the one KV head
// its query heads read (replicated, as vLLM does).
#pragma once

#include <cstdint>
#include <string>

#include "relayllm/model/model_config.h"
#include "relayllm/model/model_weights.h"

namespace relayllm {

struct ShardLayout {
  int rank = 0, size = 1;
  int64_t total_heads = 0, total_kv_heads = 0;  // of the whole model
  int64_t num_heads = 0, first_head = 0;        // query heads of this rank
  int64_t num_kv_heads = 0, first_kv_head = 0;  // KV heads it holds
  int64_t intermediate = 0, first_intermediate = 0;
  bool sharded() const { return size > 1; }
};

// This rank's part. Throws Error with one line when `size` does not divide the query
// heads, the KV heads (or, with fewer KV heads than ranks, is not a multiple of them),
// or intermediate_size.
ShardLayout shard_layout(const ModelConfig& config, int rank, int size);

// Which part of a full tensor a rank holds: rows [begin, end) or columns [begin, end)
// of a [rows, cols] weight (a bias or vector: its elements), or all of it.
enum class SliceAxis { kNone, kRows, kCols };
struct WeightSlice {
  SliceAxis axis = SliceAxis::kNone;
  int64_t begin = 0, end = 0;
  bool whole() const { return axis == SliceAxis::kNone; }
};
WeightSlice weight_slice(const WeightSlot& slot, const ShardLayout& layout);
// The shape a slot has on this rank.
std::vector<int64_t> sliced_shape(const std::vector<int64_t>& shape, const WeightSlice& slice);
// Whether a weight kept in `format` blocks can be cut at these columns without
// splitting a block (rows are always whole blocks).
bool slice_keeps_blocks(const WeightSlice& slice, WeightFormat format);

// Copies this rank's part out of a full host tensor: fp32 values, or block rows when
// slice_keeps_blocks (else the part is dequantized to fp32).
HostTensor slice_host_tensor(const HostTensor& full, const WeightSlice& slice);

}  // namespace relayllm
