// The sampler's exponential pass: one vocabulary-wide row of logits turned into unnormalised
// probabilities, exp((x - max) * scale). It is the costliest pass of sampling at a temperature
// (every logit, a polynomial each), so it comes in one implementation per instruction set,
// picked once at run time. Every implementation computes the same bits for every input: the
// same float operations in the same order per element, and no fused multiply-add, so a seeded
// request samples the same tokens on any x86-64.
#pragma once

#include <cstddef>
#include <vector>

namespace relayllm::sampler_exp {

// out[i] = exp((x[i] - m) * scale) for x[i] <= m, then 0 where that is below min_w. Below
// exp's normal float range (exponent -87) the weight is exactly 0, so a masked token's -inf is
// 0. m is finite and no x[i] is NaN (the sampler checks both first). out may be x.
using ExpRowFn = void (*)(const float* x, float* out, size_t n, float m, float scale, float min_w);

struct ExpRowImpl {
  const char* isa;  // "portable", "avx2"
  ExpRowFn fn;
};

// The implementations this CPU runs, the portable one first.
std::vector<ExpRowImpl> usable_exp_rows();

// The fastest of usable_exp_rows(), chosen on the first call.
ExpRowFn exp_row();

// exp(x) for x <= 0, the same bits as an element of exp_row (0 below -87).
float exp_nonpositive(float x);

}  // namespace relayllm::sampler_exp
