// The sampler's exponential pass with 8 lanes. Compiled with -mavx2 and nothing else: without
// -mfma the compiler cannot fuse a multiply and an add, so every lane computes the portable
// implementation's bits (sampler_exp.h).
#include "relayllm/engine/sampler_exp.h"
#include "relayllm/engine/sampler_exp_lanes.h"

namespace relayllm::sampler_exp {

void exp_row_avx2(const float* x, float* out, size_t n, float m, float scale, float min_w) {
  using F8 = float __attribute__((vector_size(32)));
  using I8 = int32_t __attribute__((vector_size(32)));
  exp_row_lanes<F8, I8>(x, out, n, m, scale, min_w);
}

}  // namespace relayllm::sampler_exp
