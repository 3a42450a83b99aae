// Host-side dispatch from a runtime DType to the device element type of a launch:
// f(__nv_bfloat16{}), f(__half{}) or f(float{}) (float for kF32, and for any other dtype).
// Shared by the launchers that take every activation dtype.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "relayllm/backend/tensor.h"

namespace relayllm::cuda {

template <typename F>
void dispatch(DType dtype, F&& f) {
  if (dtype == DType::kBF16)
    f(__nv_bfloat16{});
  else if (dtype == DType::kF16)
    f(__half{});
  else
    f(float{});
}

}  // namespace relayllm::cuda
