// The decode projections' kernel: a weight-streaming GEMM for few rows
// (cuda_skinny_gemm.cu says how it is built). Host-includable.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "relayllm/backend/tensor.h"

namespace relayllm::cuda {

// Rows (tokens) the kernel takes; beyond it cuBLASLt's tensor-core GEMMs are used.
constexpr int64_t kSkinnyGemmMaxRows = 32;

struct SkinnyGemmArgs {
  DType dtype = DType::kBF16;  // of x, w, bias and (unless out_f32) out
  const void* x = nullptr;     // [t, k]
  const void* w = nullptr;     // [rows, k]; gated: [2 * rows, k], gate rows then up rows
  int64_t t = 0, k = 0, rows = 0;
  // Up to three outputs by row range: rows [part_end[p-1], part_end[p]) go to out[p],
  // [t, part_end[p] - part_end[p-1]], plus bias[p] (may be null). Unused parts end at `rows`.
  int64_t part_end[3] = {0, 0, 0};
  void* out[3] = {nullptr, nullptr, nullptr};
  const void* bias[3] = {nullptr, nullptr, nullptr};
  bool out_f32 = false;  // out[p] is float32 (the lm_head's logits)
  // out[0] [t, rows] = silu(x * gate^T) * (x * up^T); no bias.
  bool gated = false;
  // Launch as a programmatic dependent of the previous kernel in the stream (sm_90+): the
  // weights start streaming before that kernel ends; x is read only after it has.
  bool programmatic = false;
};

// Whether the kernel takes this shape: 1 <= t <= kSkinnyGemmMaxRows, k a multiple of 8,
// x and w 16-byte aligned.
bool skinny_gemm_fits(int64_t t, int64_t k, const void* x, const void* w);
void launch_skinny_gemm(const SkinnyGemmArgs& args, cudaStream_t stream);

}  // namespace relayllm::cuda
