// Launchers of the CUDA backend's kernels. Pointers are device memory; `dtype`
// selects the 16-bit format (bf16 or fp16) of activations, weights and KV.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "relayllm/backend/tensor.h"

namespace relayllm::cuda {

void launch_embedding(DType dtype, const void* table, const int32_t* ids, int64_t rows,
                      int64_t hidden, void* out, cudaStream_t stream);
void launch_rmsnorm(DType dtype, const void* x, const void* weight, float eps, int64_t rows,
                    int64_t n, void* out, cudaStream_t stream);
void launch_add_rmsnorm(DType dtype, void* residual, const void* x, const void* weight, float eps,
                        int64_t rows, int64_t n, void* out, cudaStream_t stream);
// The same ops with each row in registers (cuda_norms.cu): false, launching nothing,
// where they do not apply (fp32, n not a multiple of 8 or above 16384, unaligned).
bool launch_rmsnorm_registers(DType dtype, const void* x, const void* weight, float eps,
                              int64_t rows, int64_t n, void* out, cudaStream_t stream);
bool launch_add_rmsnorm_registers(DType dtype, void* residual, const void* x, const void* weight,
                                  float eps, int64_t rows, int64_t n, void* out,
                                  cudaStream_t stream);
void launch_rope(DType dtype, void* q, void* k, const float* cos_sin, const int32_t* positions,
                 int64_t rows, int64_t hq, int64_t hk, int64_t d, cudaStream_t stream);
// launch_rope, then launch_write_kv of the rotated k and of v, in one kernel.
void launch_rope_write_kv(DType dtype, void* q, void* k, const void* v, const float* cos_sin,
                          const int32_t* positions, const int64_t* slots, int64_t rows, int64_t hq,
                          int64_t hk, int64_t d, void* k_cache, void* v_cache, cudaStream_t stream);
void launch_silu_mul(DType dtype, const void* gate, const void* up, int64_t n, void* out,
                     cudaStream_t stream);
void launch_write_kv(DType dtype, const void* k, const void* v, const int64_t* slots, int64_t rows,
                     int64_t row_size, void* k_cache, void* v_cache, cudaStream_t stream);
void launch_gather_rows(DType dtype, const void* x, const int32_t* rows_idx, int64_t rows,
                        int64_t n, void* out, cudaStream_t stream);
void launch_add_bias(DType dtype, void* out, const void* bias, int64_t rows, int64_t n,
                     cudaStream_t stream);
// 16-bit -> fp32 (or fp32 copy) for downloads.
void launch_to_f32(DType dtype, const void* x, int64_t n, float* out, cudaStream_t stream);

}  // namespace relayllm::cuda
