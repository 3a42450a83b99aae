// Launchers of the paged attention kernels (see attention_work.h for the scheme).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "relayllm/backend/cuda/attention_work.h"
#include "relayllm/backend/tensor.h"

namespace relayllm::cuda {

struct AttentionArgs {
  DType dtype;
  int32_t head_dim;
  int32_t num_heads;
  int32_t num_kv_heads;
  int32_t block_size;
  int32_t block_shift;       // log2(block_size) when it is a power of two, else -1
  float scale;
  const void* q;             // [rows, num_heads, head_dim]
  const void* k_cache;       // [blocks, block_size, num_kv_heads, head_dim]
  const void* v_cache;
  const int32_t* block_tables;
  const QuerySlot* slots;
  const AttentionItem* narrow;
  const AttentionItem* wide;
  // Device: [narrow items, wide items, merge outputs] of this step, read by the
  // kernels so that a captured graph serves steps with other counts.
  const int32_t* item_counts;
  // Device scratch [4], zero between launches: the next unclaimed narrow / wide
  // item, then how many narrow / wide CTAs have finished (the last one zeroes both
  // of its kernel, so that no reset is launched per call).
  int32_t* item_cursors;
  // CTAs launched per kernel (0: skip it). Each CTA claims items until none is left.
  int32_t narrow_grid;
  int32_t wide_grid;
  int32_t merge_grid;        // CTAs of the merge kernel (0: skip it); they stride over the outputs
  bool dependent_launch;     // sm_90+: the narrow grid overlaps the wide grid's tail
  float* partial_o;          // [num_partials, head_dim]
  float* partial_lse;        // [num_partials]
  const int32_t* merge_offsets;   // CSR over row_head: the partials of each output
  const int32_t* merge_partials;
  const int32_t* merge_outputs;   // the outputs no finalizing item wrote
  void* out;                 // [rows, num_heads, head_dim]
};

// Wide items, then narrow items (which may finalize outputs, reading the wide
// items' partials), then the merge of the outputs left, in order on `stream`.
void launch_attention(const AttentionArgs& args, cudaStream_t stream);

// How many CTAs of the narrow and the wide kernel fit on one multiprocessor. Also
// opts the kernels into their shared memory size, so call it once per dtype and
// head_dim before the first launch and outside graph capture.
struct AttentionOccupancy {
  int32_t narrow_per_sm = 0;
  int32_t wide_per_sm = 0;
};
AttentionOccupancy prepare_attention(DType dtype, int32_t head_dim);

}  // namespace relayllm::cuda
