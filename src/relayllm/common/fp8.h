// Conversions between fp32 and float8 e4m3 ("e4m3fn": 1 sign, 4 exponent bits of bias 7,
// 3 mantissa bits; no infinities, S.1111.111 is NaN, the largest finite value is 448).
// float_to_e4m3 rounds to nearest even and saturates to +-448, as CUDA's
// __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3) does, so the CPU reference and the
// GPU quantize the same activations to the same codes.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace relayllm {

inline constexpr float kE4m3Max = 448.0f;

inline float e4m3_to_float(uint8_t code) {
  const float sign = (code & 0x80) ? -1.0f : 1.0f;
  const int exponent = (code >> 3) & 0xf, mantissa = code & 7;
  if (exponent == 0xf && mantissa == 7) return std::nanf("");
  if (exponent == 0) return sign * std::ldexp(float(mantissa), -9);  // subnormal: m * 2^-9
  return sign * std::ldexp(float(8 + mantissa), exponent - 10);      // 1.m * 2^(e-7)
}

inline uint8_t float_to_e4m3(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint8_t sign = uint8_t((bits >> 24) & 0x80);
  bits &= 0x7fffffffu;
  if (bits > 0x7f800000u) return uint8_t(sign | 0x7f);   // NaN
  if (bits >= 0x43e00000u) return uint8_t(sign | 0x7e);  // >= 448 (and inf): saturate
  if (bits < 0x3c800000u) {
    // Below 2^-6, the smallest normal: multiples of 2^-9. Scaling by 2^9 is exact, and
    // rint rounds to nearest even; 8 * 2^-9 is code 0x08, the smallest normal.
    return uint8_t(sign | uint8_t(std::rint(std::bit_cast<float>(bits) * 512.0f)));
  }
  // Normal: keep 3 of the 23 mantissa bits, rounding to nearest even (a carry moves into
  // the exponent, as it should); then rebias the exponent from 127 to 7.
  bits += 0x7ffffu + ((bits >> 20) & 1);
  const uint32_t code = (bits >> 20) - ((127 - 7) << 3);
  return uint8_t(sign | uint8_t(code > 0x7e ? 0x7e : code));
}

}  // namespace relayllm
