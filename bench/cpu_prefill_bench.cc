// The CPU backend's linear op on block weights at prefill sizes: the integer kernels
// (activations quantized to 8 bits, 8-token tiles reusing each weight row from L1) against
// fp32 sgemm on dequantized weight panels (OpenBLAS), per shape and token count. Picks the
// rows from which sgemm pays (CpuBackendOptions::sgemm_min_rows).
//
//   build/cpu_prefill_bench [threads] [reps]
//
// Shapes are SmolLM2-135M's (hidden 576, MLP 1536, 3 KV heads of 64); weights are random
// blocks (speed does not depend on the values). Prints the best of `reps` wall times per
// cell (the machine may be shared: the minimum is the least disturbed run) and GFLOP/s.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "random_blocks.h"
#include "relayllm/backend/cpu/cpu_backend.h"

using namespace relayllm;
using relayllm::bench::random_blocks;

namespace {

double best_ms(CpuBackend& backend, const Tensor& x, const Tensor& w, Tensor& out, int reps) {
  double best = 1e30;
  backend.linear(x, w, nullptr, out);  // warm caches and the pool
  for (int r = 0; r < reps; ++r) {
    const auto start = std::chrono::steady_clock::now();
    backend.linear(x, w, nullptr, out);
    best = std::min(
        best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                  .count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 0;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 5;
  CpuBackend ints(CpuBackendOptions{.num_threads = threads, .sgemm_min_rows = 0});
  CpuBackend sgemm(CpuBackendOptions{.num_threads = threads, .sgemm_min_rows = 1});
  if (sgemm.sgemm_min_rows() == 0) {
    std::fprintf(stderr, "this build has no OpenBLAS: nothing to compare\n");
    return 1;
  }
  std::printf("%d threads, %s kernels, best of %d\n\n", ints.pool().size(), ints.kernels().isa,
              reps);
  std::printf(
      "| format | N x K | tokens | integer kernels ms | GFLOP/s | sgemm ms | GFLOP/s | "
      "sgemm / integer speed |\n|---|---|---:|---:|---:|---:|---:|---:|\n");
  std::mt19937 rng(1);
  struct Shape {
    int64_t n, k;
  };
  for (WeightFormat f : {WeightFormat::kQ4_1, WeightFormat::kQ8_0})
    for (Shape s : {Shape{1536, 576}, Shape{576, 1536}, Shape{576, 576}, Shape{192, 576}}) {
      std::vector<std::byte> bytes = random_blocks(f, s.n, s.k, rng);
      Tensor wi = ints.upload_blocks(f, bytes, {s.n, s.k});
      Tensor ws = sgemm.upload_blocks(f, bytes, {s.n, s.k});
      for (int64_t t : {4, 8, 16, 32, 64, 128, 512}) {
        std::vector<float> xh(size_t(t * s.k));
        std::normal_distribution<float> normal;
        for (float& v : xh) v = normal(rng);
        Tensor x = ints.upload(xh, {t, s.k}, DType::kF32);
        Tensor out = ints.empty({t, s.n}, DType::kF32);
        const double a = best_ms(ints, x, wi, out, reps), b = best_ms(sgemm, x, ws, out, reps);
        const double gflop = 2.0 * double(t) * double(s.n) * double(s.k) * 1e-9;
        std::printf("| %s | %ldx%ld | %ld | %.3f | %.1f | %.3f | %.1f | %.2f |\n",
                    weight_format_name(f).c_str(), long(s.n), long(s.k), long(t), a,
                    gflop / a * 1e3, b, gflop / b * 1e3, a / b);
        std::fflush(stdout);
      }
    }
  return 0;
}
