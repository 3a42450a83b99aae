// What the CUDA benchmarks say of the device they ran on: its name and the copy bandwidth
// (read + write) measured in the same run, the floor their fractions are of.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdio>
#include <string>

#include "relayllm/backend/cuda/cuda_backend.h"
#include "relayllm/common/error.h"

namespace relayllm::bench {

#define BENCH_CUDA(expr)                                                         \
  do {                                                                           \
    cudaError_t e_ = (expr);                                                     \
    if (e_ != cudaSuccess) fail("{} failed: {}", #expr, cudaGetErrorString(e_)); \
  } while (0)

inline std::string device_name() {
  cudaDeviceProp prop{};
  BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  return prop.name;
}

// Copy bandwidth in bytes/s over two buffers of `bytes`, `reps` copies; an error naming
// `bench` where the device has no room for the buffers.
inline double copy_bandwidth(CudaBackend& gpu, const char* bench, size_t bytes, int reps) {
  const double bw = gpu.measure_copy_bandwidth(bytes, reps);
  RELAYLLM_CHECK(bw > 0, "{}: no room for two {} GiB copy buffers", bench, bytes >> 30);
  return bw;
}

// The attention benchmarks' first results line, {"kind": "copy", ...} (work_list_report reads
// the bandwidth back from it): the copy over two 2 GiB buffers. Returns the bandwidth.
inline double print_copy_line(CudaBackend& gpu, const char* bench, const std::string& device) {
  const double bw = copy_bandwidth(gpu, bench, size_t(2) << 30, 20);
  std::printf("{\"kind\": \"copy\", \"device\": \"%s\", \"copy_bw_gbs\": %.1f}\n", device.c_str(),
              bw / 1e9);
  std::fflush(stdout);
  return bw;
}

}  // namespace relayllm::bench
