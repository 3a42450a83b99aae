#include "relayllm/engine/sampler_exp.h"

#include "relayllm/engine/sampler_exp_lanes.h"

namespace relayllm::sampler_exp {

#if defined(RELAYLLM_X86_KERNELS)
void exp_row_avx2(const float* x, float* out, size_t n, float m, float scale, float min_w);
#endif

namespace {

// 4 lanes: SSE2, which every x86-64 has (and a plain loop elsewhere).
using F4 = float __attribute__((vector_size(16)));
using I4 = int32_t __attribute__((vector_size(16)));

void exp_row_portable(const float* x, float* out, size_t n, float m, float scale, float min_w) {
  exp_row_lanes<F4, I4>(x, out, n, m, scale, min_w);
}

}  // namespace

std::vector<ExpRowImpl> usable_exp_rows() {
  std::vector<ExpRowImpl> impls{{"portable", exp_row_portable}};
#if defined(RELAYLLM_X86_KERNELS)
  if (__builtin_cpu_supports("avx2")) impls.push_back({"avx2", exp_row_avx2});
#endif
  return impls;
}

ExpRowFn exp_row() {
  static const ExpRowFn best = usable_exp_rows().back().fn;
  return best;
}

float exp_nonpositive(float x) { return exp_nonpositive_scalar(x); }

}  // namespace relayllm::sampler_exp
