#include "relayllm/backend/cpu/quant_dequant.h"

#include "relayllm/backend/cpu/quant_kernels.h"
#include "relayllm/common/error.h"

namespace relayllm::cpu_quant {
namespace {

#include "relayllm/backend/cpu/quant_block_math.inc"

void q8_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  for (int j = 0; j < 32; ++j) y[j] = d * float(int8_t(b[2 + j]));
}

void q4_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float((b[2 + j] & 0x0f) - 8);
    y[j + 16] = d * float((b[2 + j] >> 4) - 8);
  }
}

void q4_1(const uint8_t* b, float* y) {
  const float d = load_half(b), m = load_half(b + 2);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(b[4 + j] & 0x0f) + m;
    y[j + 16] = d * float(b[4 + j] >> 4) + m;
  }
}

// Q4_K (qh == nullptr) and Q5_K.
void k_quant_4_5(const uint8_t* b, const uint8_t* qh, const uint8_t* qs, float* y) {
  const float d = load_half(b), dmin = load_half(b + 2);
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    k_scale_min(j, b + 4, sc, m);
    const uint8_t* q = qs + 32 * (j / 2);
    for (int l = 0; l < 32; ++l) {
      int v = (q[l] >> (4 * (j % 2))) & 0x0f;
      if (qh) v |= ((qh[l] >> j) & 1) << 4;
      y[32 * j + l] = d * float(sc) * float(v) - dmin * float(m);
    }
  }
}

void q6_k(const uint8_t* b, float* y) {
  const float d = load_half(b + 208);
  for (int half = 0; half < 2; ++half) {
    const uint8_t* ql = b + 64 * half;
    const uint8_t* qh = b + 128 + 32 * half;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192) + 8 * half;
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        const int lo = (ql[l + 32 * (c % 2)] >> (4 * (c / 2))) & 0x0f;
        const int q = lo | (((qh[l] >> (2 * c)) & 3) << 4);
        y[128 * half + 32 * c + l] = d * float(sc[2 * c + l / 16]) * float(q - 32);
      }
  }
}

}  // namespace

void dequantize_row(WeightFormat format, const void* row, int64_t k, float* out) {
  const uint8_t* p = static_cast<const uint8_t*>(row);
  switch (format) {
    case WeightFormat::kF16:
      for (int64_t i = 0; i < k; ++i) out[i] = load_half(p + 2 * i);
      return;
    case WeightFormat::kBF16:
      for (int64_t i = 0; i < k; ++i) out[i] = bf16_bits_to_float(load_u16(p + 2 * i));
      return;
    case WeightFormat::kQ8_0:
      for (int64_t i = 0; i < k / 32; ++i) q8_0(p + 34 * i, out + 32 * i);
      return;
    case WeightFormat::kQ4_0:
      for (int64_t i = 0; i < k / 32; ++i) q4_0(p + 18 * i, out + 32 * i);
      return;
    case WeightFormat::kQ4_1:
      for (int64_t i = 0; i < k / 32; ++i) q4_1(p + 20 * i, out + 32 * i);
      return;
    case WeightFormat::kQ4_K:
      for (int64_t i = 0; i < k / 256; ++i) {
        const uint8_t* b = p + 144 * i;
        k_quant_4_5(b, nullptr, b + 16, out + 256 * i);
      }
      return;
    case WeightFormat::kQ5_K:
      for (int64_t i = 0; i < k / 256; ++i) {
        const uint8_t* b = p + 176 * i;
        k_quant_4_5(b, b + 16, b + 48, out + 256 * i);
      }
      return;
    case WeightFormat::kQ6_K:
      for (int64_t i = 0; i < k / 256; ++i) q6_k(p + 210 * i, out + 256 * i);
      return;
    case WeightFormat::kNone:
    case WeightFormat::kFP8:  // per-row scales: dequantize_fp8_row (backend/fp8_weight.h)
      break;
  }
  fail("dequantize_row: format {} is not a block format", weight_format_name(format));
}

}  // namespace relayllm::cpu_quant
