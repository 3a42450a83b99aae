// OpenBLAS, opened at run time (dlopen) when the CPU backend first asks for it: the prefill
// GEMM (cpu_linear_sgemm.cc) uses it where it is installed (Debian: libopenblas0), and a binary
// runs without it elsewhere (prefill then stays on the integer kernels). No build-time
// dependency: the two entry points are declared here with CBLAS's integer enum values.
#pragma once

namespace relayllm::openblas {

// CBLAS's enum values (cblas.h), fixed by the CBLAS standard.
inline constexpr int kRowMajor = 101;
inline constexpr int kNoTrans = 111;
inline constexpr int kTrans = 112;

struct Library {
  void (*sgemm)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                const float* a, int lda, const float* b, int ldb, float beta, float* c,
                int ldc) = nullptr;
  void (*set_num_threads)(int threads) = nullptr;
};

// The loaded library, or null when no OpenBLAS can be opened (looked up once per process;
// RELAYLLM_OPENBLAS names another file to open).
const Library* library();

}  // namespace relayllm::openblas
