// Launchers of the CUDA backend's FP8 linear op helpers (the math: backend/fp8_weight.h).
// Pointers are device memory.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "relayllm/backend/tensor.h"

namespace relayllm::cuda {

// codes[r, :] = e4m3(x[r, :] / s[r]) for x [rows, k] in `dtype` (bf16, fp16 or fp32), with
// s[r] = *static_scale when that is nonzero (a checkpoint's input_scale), else the row's
// max|x| / 448 (1 for an all-zero row). scales[r] = s[r]. One CTA per row.
void launch_quantize_fp8_rows(DType dtype, const void* x, int64_t rows, int64_t k,
                              const float* static_scale, uint8_t* codes, float* scales,
                              cudaStream_t stream);

// out[r, c] = (row_scales[r] * col_scales[c]) * acc[r, c] in `dtype`: the epilogue of an FP8
// GEMM run with unit scales, for cuBLASLt builds without per-row/per-column scale vectors.
void launch_fp8_rescale(DType dtype, const float* acc, const float* row_scales,
                        const float* col_scales, int64_t rows, int64_t n, void* out,
                        cudaStream_t stream);

// The FP8 linear op for 1 to kFp8GemvMaxTokens activation rows (decode): out[t, r] =
// (x_scales[t] * w_scales[r]) * sum_k e4m3(xq[t, k]) * e4m3(w[r, k]), fp32 sums, k a multiple of
// 16 and the rows 16-byte aligned.
inline constexpr int64_t kFp8GemvMaxTokens = 4;
void launch_fp8_gemv(DType dtype, const uint8_t* w, const float* w_scales, const uint8_t* xq,
                     const float* x_scales, int64_t tokens, int64_t n, int64_t k, void* out,
                     cudaStream_t stream);

// The same op from 16-bit x [tokens, k] in one launch (each CTA quantizes x per token, or by
// *static_scale when nonzero, into shared memory), out in x's dtype. Returns false, launching
// nothing, where it does not apply: more than kFp8GemvMaxTokens rows, x codes beyond
// kFp8FusedGemvMaxSharedBytes (the default 48 KiB of a CTA, less the kernel's own), fp32 x, x
// not 16-byte aligned.
inline constexpr size_t kFp8FusedGemvMaxSharedBytes = 47 * 1024;
bool launch_fp8_fused_gemv(DType dtype, const void* x, const float* static_scale, const uint8_t* w,
                           const float* w_scales, int64_t tokens, int64_t n, int64_t k, void* out,
                           cudaStream_t stream);

}  // namespace relayllm::cuda
