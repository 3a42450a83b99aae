// Launcher of the paged attention kernel (see attention_work.h for the scheme).
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
  int32_t block_shift;  // log2(block_size) when it is a power of two, else -1
  float scale;
  const void* q;        // [rows, num_heads, head_dim]
  const void* k_cache;  // [blocks, block_size, num_kv_heads, head_dim]
  const void* v_cache;
  const int32_t* block_tables;
  const QuerySlot* slots;
  const AttentionUnit* units;
  // Device: [units, outputs to merge] of the step, read by the kernel so that a
  // captured graph serves steps with other counts.
  const int32_t* counts;
  // Device scratch [3], zero between launches: the next unclaimed unit, how many
  // CTAs have finished, the next unclaimed merge (the last CTA out zeroes all three,
  // so no reset is launched per call).
  int32_t* cursor;
  // Device [rows * num_heads], zero between launches: partials written per output;
  // the warp that merges an output waits for all of them and zeroes its count.
  int32_t* arrivals;
  int32_t grid;               // CTAs (0: skip); each claims units until none is left
  float* partial_o;           // [num_partials, head_dim]
  float* partial_lse;         // [num_partials]
  const MergeOutput* merges;  // the outputs with more than one partial
  void* out;                  // [rows, num_heads, head_dim]
};

void launch_attention(const AttentionArgs& args, cudaStream_t stream);

// How many CTAs of the kernel fit on one multiprocessor. Also opts the kernel into
// its shared memory size, so call it once per dtype and head_dim before the first
// launch and outside graph capture.
struct AttentionOccupancy {
  int32_t ctas_per_sm = 0;
};
AttentionOccupancy prepare_attention(DType dtype, int32_t head_dim);

}  // namespace relayllm::cuda
