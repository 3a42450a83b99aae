// The decode step's projections alone: the skinny GEMM (cuda_skinny_gemm.cu) against
// cuBLASLt on the shapes of Llama-2-7B and Llama-3-8B, for 1 to 32 rows. Each timing
// is a CUDA graph of 24 calls that rotate over copies of the weight (at least 512 MB in
// all, so the weights come from device memory, not L2), replayed 5 times after one
// warm-up; per call: microseconds, GB/s of its bytes (weight + x + out) and the
// fraction of the copy bandwidth measured in the same run.
//
// Usage: gemm_bench [rows,...]   (default 1,2,4,8,16,32)
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "bench_main.h"
#include "cuda_device.h"
#include "relayllm/backend/cuda/cuda_backend.h"
#include "relayllm/common/error.h"

namespace relayllm {
namespace {

struct Shape {
  const char* name;
  int64_t n, k;
};

// Microseconds per call of `calls` projections captured in one graph.
double time_linear(CudaBackend& be, std::vector<Tensor>& weights, const Tensor& x, Tensor& out,
                   int64_t key) {
  constexpr int kCalls = 24, kReplays = 5;
  be.linear(x, weights[0], nullptr, out);  // plans cuBLASLt outside the capture
  be.synchronize();
  be.capture_begin();
  for (int i = 0; i < kCalls; ++i) be.linear(x, weights[size_t(i) % weights.size()], nullptr, out);
  be.capture_end(key);
  RELAYLLM_CHECK(be.replay(key), "gemm_bench: no graph under key {}", key);  // warm-up
  be.synchronize();
  cudaStream_t stream = static_cast<cudaStream_t>(be.stream());
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  cudaEventRecord(e0, stream);
  for (int r = 0; r < kReplays; ++r) be.replay(key);
  cudaEventRecord(e1, stream);
  cudaEventSynchronize(e1);
  float ms = 0;
  cudaEventElapsedTime(&ms, e0, e1);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return double(ms) * 1e3 / (kCalls * kReplays);
}

int run(int argc, char** argv) {
  std::vector<int64_t> rows_list = {1, 2, 4, 8, 16, 32};
  if (argc > 1) {
    rows_list.clear();
    std::stringstream in(argv[1]);
    for (std::string item; std::getline(in, item, ',');) rows_list.push_back(std::stoll(item));
  }
  CudaBackend skinny(CudaBackendOptions{.skinny_gemm_max_rows = 32});
  CudaBackend cublas(CudaBackendOptions{.skinny_gemm_max_rows = 0});
  const double bw = skinny.measure_copy_bandwidth(size_t(1) << 30, 10);
  std::printf("device: %s, copy bandwidth %.0f GB/s (read + write)\n\n",
              bench::device_name().c_str(), bw / 1e9);
  std::printf(
      "| projection | N x K | rows | cuBLASLt us | skinny us | cuBLASLt GB/s (of copy) | skinny "
      "GB/s (of "
      "copy) | skinny speedup |\n|---|---|---|---|---|---|---|---|\n");
  const Shape shapes[] = {{"llama2 qkv", 12288, 4096},     {"llama2 o", 4096, 4096},
                          {"llama2 gate_up", 22016, 4096}, {"llama2 down", 4096, 11008},
                          {"llama2 lm_head", 32000, 4096}, {"llama3 qkv", 6144, 4096},
                          {"llama3 gate_up", 28672, 4096}, {"llama3 down", 4096, 14336},
                          {"llama3 lm_head", 128256, 4096}};
  int64_t key = 0;
  for (const Shape& s : shapes) {
    const double weight_bytes = 2.0 * double(s.n) * double(s.k);
    const size_t copies = size_t(std::max(2.0, std::ceil(512e6 / weight_bytes)));
    for (int64_t t : rows_list) {
      double us[2];
      CudaBackend* backends[2] = {&cublas, &skinny};
      for (int b = 0; b < 2; ++b) {
        CudaBackend& be = *backends[b];
        std::vector<Tensor> weights;
        for (size_t c = 0; c < copies; ++c) weights.push_back(be.empty({s.n, s.k}, DType::kBF16));
        Tensor x = be.empty({t, s.k}, DType::kBF16);
        cudaMemsetAsync(x.storage.get(), 0, x.bytes(), static_cast<cudaStream_t>(be.stream()));
        for (Tensor& w : weights)
          cudaMemsetAsync(w.storage.get(), 0, w.bytes(), static_cast<cudaStream_t>(be.stream()));
        Tensor out = be.empty({t, s.n}, DType::kBF16);
        us[b] = time_linear(be, weights, x, out, ++key);
      }
      const double bytes = weight_bytes + 2.0 * double(t) * double(s.k + s.n);
      auto gbs = [&](double u) { return bytes / (u * 1e-6) / 1e9; };
      std::printf(
          "| %s | %lld x %lld | %lld | %.1f | %.1f | %.0f (%.0f%%) | %.0f (%.0f%%) | %.2f |\n",
          s.name, (long long)s.n, (long long)s.k, (long long)t, us[0], us[1], gbs(us[0]),
          100.0 * gbs(us[0]) * 1e9 / bw, gbs(us[1]), 100.0 * gbs(us[1]) * 1e9 / bw, us[0] / us[1]);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace relayllm

int main(int argc, char** argv) {
  return relayllm::bench::run_main("gemm_bench", [&] { return relayllm::run(argc, argv); });
}
