// CUDA error checks usable from .cu files: the throw itself lives in a .cc file,
// so nvcc never compiles the fmt-based error formatting.
#pragma once

#include <cuda_runtime.h>

namespace relayllm::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line);
[[noreturn]] void throw_message(const char* message);

}  // namespace relayllm::cuda

#define RELAYLLM_CUDA_CHECK(expr)                                                   \
  do {                                                                              \
    cudaError_t relayllm_err_ = (expr);                                             \
    if (relayllm_err_ != cudaSuccess)                                               \
      ::relayllm::cuda::throw_cuda_error(relayllm_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// After every launch: a bad configuration surfaces here, not at the next sync.
#define RELAYLLM_CUDA_LAUNCH_CHECK(what) RELAYLLM_CUDA_CHECK(cudaGetLastError())
