// The prefill sgemm of the CPU backend through two Debian libraries, side by side: OpenBLAS
// (cblas_sgemm, what the backend opens) and oneDNN (dnnl_sgemm). Both are opened at run
// time, as the backend does, and called in the backend's pattern (cpu_linear_sgemm.cc):
// out[T, N] = x[T, K] * panel[64, K]^T, one single-threaded call per 64-row weight panel,
// the panels shared by the pool's threads. Weight panels are fp32 (the dequantization in
// front of each call is the same for both libraries and is left out).
//
//   build/cpu_sgemm_libs_bench [threads] [reps]
//
// oneDNN's Debian build threads with OpenMP: OMP_NUM_THREADS=1 is set before it is opened,
// so each call stays on its pool thread (as OpenBLAS's openblas_set_num_threads(1)). Prints
// the best of `reps` wall times per cell (the machine may be shared) and GFLOP/s.
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "relayllm/common/thread_pool.h"

using namespace relayllm;

namespace {

using CblasSgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*,
                            int, float, float*, int);
using DnnlSgemm = int (*)(char, char, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
constexpr int64_t kPanelRows = 64;

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 0;
  const int reps = argc > 2 ? std::max(1, std::atoi(argv[2])) : 5;
  setenv("OMP_NUM_THREADS", "1", 1);
  void* blas = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
  void* dnnl = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!blas || !dnnl) {
    std::fprintf(stderr, "need both libopenblas.so.0 and libdnnl.so.2 (%s)\n", dlerror());
    return 1;
  }
  auto cblas = reinterpret_cast<CblasSgemm>(dlsym(blas, "cblas_sgemm"));
  auto blas_threads = reinterpret_cast<void (*)(int)>(dlsym(blas, "openblas_set_num_threads"));
  auto dsgemm = reinterpret_cast<DnnlSgemm>(dlsym(dnnl, "dnnl_sgemm"));
  if (!cblas || !blas_threads || !dsgemm) {
    std::fprintf(stderr, "cblas_sgemm, openblas_set_num_threads or dnnl_sgemm missing\n");
    return 1;
  }
  blas_threads(1);
  ThreadPool pool(threads);
  std::printf("%d threads, best of %d, 64-row panels\n\n", pool.size(), reps);
  std::printf(
      "| N x K | tokens | OpenBLAS ms | GFLOP/s | oneDNN ms | GFLOP/s | oneDNN / OpenBLAS speed "
      "|\n|---|---:|---:|---:|---:|---:|---:|\n");
  struct Shape {
    int64_t n, k;
  };
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  for (Shape s : {Shape{960, 576}, Shape{576, 576}, Shape{3072, 576}, Shape{576, 1536}}) {
    std::vector<float> w(size_t(s.n * s.k));
    for (float& v : w) v = normal(rng) * 0.05f;
    for (int64_t t : {16, 64, 128, 474}) {
      std::vector<float> x(size_t(t * s.k)), out(size_t(t * s.n));
      for (float& v : x) v = normal(rng);
      auto run = [&](bool use_dnnl) {
        pool.parallel_for(
            size_t(s.n),
            [&](size_t nb, size_t ne) {
              for (size_t p0 = nb; p0 < ne; p0 += kPanelRows) {
                const int64_t rows = std::min<int64_t>(kPanelRows, int64_t(ne - p0));
                const float* panel = w.data() + p0 * size_t(s.k);
                if (use_dnnl)
                  dsgemm('N', 'T', t, rows, s.k, 1.0f, x.data(), s.k, panel, s.k, 0.0f,
                         out.data() + p0, s.n);
                else
                  cblas(kRowMajor, kNoTrans, kTrans, int(t), int(rows), int(s.k), 1.0f, x.data(),
                        int(s.k), panel, int(s.k), 0.0f, out.data() + p0, int(s.n));
              }
            },
            size_t(kPanelRows));
      };
      double best[2] = {1e30, 1e30};
      for (int r = 0; r < reps + 1; ++r)
        for (int lib = 0; lib < 2; ++lib) {  // alternating, so both see the same machine
          const auto start = std::chrono::steady_clock::now();
          run(lib == 1);
          const double ms =
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                  .count();
          if (r > 0) best[lib] = std::min(best[lib], ms);  // r == 0 warms up
        }
      const double gflop = 2.0 * double(t) * double(s.n) * double(s.k) * 1e-9;
      std::printf("| %ldx%ld | %ld | %.3f | %.1f | %.3f | %.1f | %.2f |\n", long(s.n), long(s.k),
                  long(t), best[0], gflop / best[0] * 1e3, best[1], gflop / best[1] * 1e3,
                  best[0] / best[1]);
      std::fflush(stdout);
    }
  }
  return 0;
}
