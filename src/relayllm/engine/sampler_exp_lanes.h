// The exponential of sampler_exp.h written once for any lane count, included by the portable
// and the per-ISA translation units. Everything here has internal linkage: each unit compiles
// its own copy with its own instruction set, and the linker never picks an AVX copy for a
// portable caller.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace relayllm::sampler_exp {
namespace {

constexpr float kExpMin = -87.0f;

// exp(x) for x <= 0, the only range the sampler needs (logits minus their max). Range reduction
// x = k*ln2 + r with |r| <= ln2/2, then a degree-7 Taylor polynomial: within ~2 ulp of expf
// (measured max relative error 1.0e-7). F is float or a GCC/Clang vector of floats, I the
// matching int32 type; the same operations per lane whatever the width.
template <typename F, typename I>
inline F exp_poly(F xc) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;  // few mantissa bits: k * kLn2Hi is exact
  constexpr float kLn2Lo = 1.42860682030941723212e-6f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const F k = (xc * kLog2e + kRound) - kRound;
  const F r = (xc - k * kLn2Hi) - k * kLn2Lo;
  F p = r * (1.0f / 5040.0f) + (1.0f / 720.0f);
  p = p * r + (1.0f / 120.0f);
  p = p * r + (1.0f / 24.0f);
  p = p * r + (1.0f / 6.0f);
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  I ki;
  if constexpr (std::is_same_v<F, float>) {
    ki = I(k);
  } else {
    ki = __builtin_convertvector(k, I);
  }
  return p * std::bit_cast<F>((ki + 127) << 23);
}

inline float exp_nonpositive_scalar(float x) {
  return x < kExpMin ? 0.0f : exp_poly<float, int32_t>(x);
}

// exp_row of sampler_exp.h over vectors of F (lanes of I), the tail element by element.
template <typename F, typename I>
inline void exp_row_lanes(const float* x, float* out, size_t n, float m, float scale, float min_w) {
  constexpr size_t kLanes = sizeof(F) / sizeof(float);
  const F zero = F{} * 0.0f, exp_min = zero + kExpMin, min_weight = zero + min_w;
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    F v;
    std::memcpy(&v, x + i, sizeof v);
    const F t = (v - m) * scale;
    const I low = t < exp_min;
    // Below the range the polynomial would overflow its exponent: it runs on kExpMin there
    // and the lane is set to 0 after.
    F w = exp_poly<F, I>(
        std::bit_cast<F>((low & std::bit_cast<I>(exp_min)) | (~low & std::bit_cast<I>(t))));
    w = std::bit_cast<F>(~low & std::bit_cast<I>(w));
    const I light = w < min_weight;
    w = std::bit_cast<F>(~light & std::bit_cast<I>(w));
    std::memcpy(out + i, &w, sizeof w);
  }
  for (; i < n; ++i) {
    const float w = exp_nonpositive_scalar((x[i] - m) * scale);
    out[i] = w < min_w ? 0.0f : w;
  }
}

}  // namespace
}  // namespace relayllm::sampler_exp
