// The portable kernel table: plain C++ integer dot products, one value at a time. It runs
// on any CPU and is the readable statement of each format's dot product; the SIMD tables
// compute the same integer sums.
#include <cstdint>

#include "relayllm/backend/cpu/quant_kernels.h"

namespace relayllm::cpu_quant {
namespace {

#include "relayllm/backend/cpu/quant_block_math.inc"

float dot_q8_0(int64_t k, const void* w, const ActBlock* x) {
  const uint8_t* b = static_cast<const uint8_t*>(w);
  float acc = 0.0f;
  for (int64_t i = 0; i < k / 32; ++i, b += 34) {
    int sum = 0;
    for (int j = 0; j < 32; ++j) sum += int(int8_t(b[2 + j])) * x[i].qs[j];
    acc += load_half(b) * x[i].d * float(sum);
  }
  return acc;
}

// sum((q - 8) * xq) = sum(q * xq) - 8 * sum(xq); the second term is x.s / x.d.
float dot_q4_0(int64_t k, const void* w, const ActBlock* x) {
  const uint8_t* b = static_cast<const uint8_t*>(w);
  float acc = 0.0f;
  for (int64_t i = 0; i < k / 32; ++i, b += 18) {
    int sum = 0;
    for (int j = 0; j < 16; ++j)
      sum += (b[2 + j] & 0x0f) * x[i].qs[j] + (b[2 + j] >> 4) * x[i].qs[j + 16];
    acc += load_half(b) * (x[i].d * float(sum) - 8.0f * x[i].s);
  }
  return acc;
}

float dot_q4_1(int64_t k, const void* w, const ActBlock* x) {
  const uint8_t* b = static_cast<const uint8_t*>(w);
  float acc = 0.0f;
  for (int64_t i = 0; i < k / 32; ++i, b += 20) {
    int sum = 0;
    for (int j = 0; j < 16; ++j)
      sum += (b[4 + j] & 0x0f) * x[i].qs[j] + (b[4 + j] >> 4) * x[i].qs[j + 16];
    acc += load_half(b) * x[i].d * float(sum) + load_half(b + 2) * x[i].s;
  }
  return acc;
}

float dot_q4_k(int64_t k, const void* w, const ActBlock* x) {
  const uint8_t* b = static_cast<const uint8_t*>(w);
  float acc = 0.0f;
  for (int64_t sb = 0; sb < k / 256; ++sb, b += 144, x += 8) {
    const float d = load_half(b), dmin = load_half(b + 2);
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      k_scale_min(j, b + 4, sc, m);
      const uint8_t* q = b + 16 + 32 * (j / 2);
      const int shift = (j % 2) * 4;
      int sum = 0;
      for (int l = 0; l < 32; ++l) sum += ((q[l] >> shift) & 0x0f) * x[j].qs[l];
      acc += d * float(sc) * x[j].d * float(sum) - dmin * float(m) * x[j].s;
    }
  }
  return acc;
}

float dot_q5_k(int64_t k, const void* w, const ActBlock* x) {
  const uint8_t* b = static_cast<const uint8_t*>(w);
  float acc = 0.0f;
  for (int64_t sb = 0; sb < k / 256; ++sb, b += 176, x += 8) {
    const float d = load_half(b), dmin = load_half(b + 2);
    const uint8_t* qh = b + 16;
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      k_scale_min(j, b + 4, sc, m);
      const uint8_t* q = b + 48 + 32 * (j / 2);
      const int shift = (j % 2) * 4;
      int sum = 0;
      for (int l = 0; l < 32; ++l)
        sum += (((q[l] >> shift) & 0x0f) | (((qh[l] >> j) & 1) << 4)) * x[j].qs[l];
      acc += d * float(sc) * x[j].d * float(sum) - dmin * float(m) * x[j].s;
    }
  }
  return acc;
}

// Within each half of 128 values, activation block c (0..3) covers values 32c + l, l < 32:
// the low (c = 0, 1) or high (c = 2, 3) nibble of ql[l + 32 * (c % 2)], and bit pair c of
// qh[l]. Values l < 16 of the block use scale 2c, the others scale 2c + 1 (of the half's 8).
float dot_q6_k(int64_t k, const void* w, const ActBlock* x) {
  const uint8_t* b = static_cast<const uint8_t*>(w);
  float acc = 0.0f;
  for (int64_t sb = 0; sb < k / 256; ++sb, b += 210) {
    const float d = load_half(b + 208);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = b + 64 * half;
      const uint8_t* qh = b + 128 + 32 * half;
      const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192) + 8 * half;
      for (int c = 0; c < 4; ++c, ++x) {
        int sum[2] = {0, 0};
        for (int l = 0; l < 32; ++l) {
          const int lo = (ql[l + 32 * (c % 2)] >> (4 * (c / 2))) & 0x0f;
          const int q = lo | (((qh[l] >> (2 * c)) & 3) << 4);
          sum[l / 16] += q * x->qs[l];
        }
        const int isum =
            sc[2 * c] * (sum[0] - 32 * x->sum16[0]) + sc[2 * c + 1] * (sum[1] - 32 * x->sum16[1]);
        acc += d * x->d * float(isum);
      }
    }
  }
  return acc;
}

}  // namespace

const QuantKernels& portable_kernels() {
  static const QuantKernels table = {
      "portable",
      quantize_row_act,
      {nullptr, nullptr, nullptr, dot_q8_0, dot_q4_0, dot_q4_1, dot_q4_k, dot_q5_k, dot_q6_k},
      {nullptr, half_dot_f16_scalar, half_dot_bf16_scalar},
      f16_axpy_scalar,
      to_f16_row_scalar};
  return table;
}

}  // namespace relayllm::cpu_quant
