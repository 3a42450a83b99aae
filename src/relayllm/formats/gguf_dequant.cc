#include "relayllm/formats/gguf_dequant.h"

#include <cstring>

#include "relayllm/common/error.h"
#include "relayllm/common/half.h"

namespace relayllm {
namespace {

uint16_t load_u16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
float load_f16(const uint8_t* p) { return fp16_to_float(load_u16(p)); }

// Q4_0 (18 bytes / 32 values): fp16 scale d, then 16 bytes; byte j holds value j in its low
// nibble and value j + 16 in its high nibble, both offset by 8.
void q4_0(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = float(int(qs[j] & 0x0f) - 8) * d;
    y[j + 16] = float(int(qs[j] >> 4) - 8) * d;
  }
}

// Q4_1 (20 bytes / 32 values): fp16 d, fp16 min m, then nibbles as Q4_0 without offset.
void q4_1(const uint8_t* b, float* y) {
  const float d = load_f16(b), m = load_f16(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = float(qs[j] & 0x0f) * d + m;
    y[j + 16] = float(qs[j] >> 4) * d + m;
  }
}

// Q8_0 (34 bytes / 32 values): fp16 d, then 32 int8.
void q8_0(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  for (int j = 0; j < 32; ++j) y[j] = float(int8_t(b[2 + j])) * d;
}

// The 12 scale bytes of Q4_K/Q5_K pack 8 six-bit scales and 8 six-bit mins: sub-blocks 0-3
// keep theirs in the low 6 bits of bytes 0-3 (scale) and 4-7 (min); sub-blocks 4-7 take
// their low 4 bits from bytes 8-11 and their top 2 bits from the spare top bits of bytes 0-7.
void k_scale_min(int j, const uint8_t* s, uint8_t& scale, uint8_t& min) {
  if (j < 4) {
    scale = s[j] & 63;
    min = s[j + 4] & 63;
  } else {
    scale = uint8_t((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4));
    min = uint8_t((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

// Q4_K (144 bytes / 256 values): fp16 d, fp16 dmin, 12 scale bytes, 128 nibble bytes. Each
// 64 values share 32 bytes: low nibbles are the first 32 values (sub-block 2i), high nibbles
// the next 32 (sub-block 2i+1). value = d * scale * q - dmin * min.
void q4_k(const uint8_t* b, float* y) {
  const float d = load_f16(b), dmin = load_f16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qs = b + 16;
  for (int i = 0; i < 4; ++i) {
    uint8_t sc0, m0, sc1, m1;
    k_scale_min(2 * i, scales, sc0, m0);
    k_scale_min(2 * i + 1, scales, sc1, m1);
    const float d0 = d * sc0, o0 = dmin * m0, d1 = d * sc1, o1 = dmin * m1;
    const uint8_t* q = qs + 32 * i;
    for (int l = 0; l < 32; ++l) {
      y[64 * i + l] = d0 * float(q[l] & 0x0f) - o0;
      y[64 * i + 32 + l] = d1 * float(q[l] >> 4) - o1;
    }
  }
}

// Q5_K (176 bytes / 256 values): as Q4_K plus 32 bytes qh between the scales and the nibbles;
// bit k of qh[l] is the fifth bit of value 32k + l.
void q5_k(const uint8_t* b, float* y) {
  const float d = load_f16(b), dmin = load_f16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int i = 0; i < 4; ++i) {
    uint8_t sc0, m0, sc1, m1;
    k_scale_min(2 * i, scales, sc0, m0);
    k_scale_min(2 * i + 1, scales, sc1, m1);
    const float d0 = d * sc0, o0 = dmin * m0, d1 = d * sc1, o1 = dmin * m1;
    const uint8_t* q = qs + 32 * i;
    for (int l = 0; l < 32; ++l) {
      int lo = (q[l] & 0x0f) | (((qh[l] >> (2 * i)) & 1) << 4);
      int hi = (q[l] >> 4) | (((qh[l] >> (2 * i + 1)) & 1) << 4);
      y[64 * i + l] = d0 * float(lo) - o0;
      y[64 * i + 32 + l] = d1 * float(hi) - o1;
    }
  }
}

// Q6_K (210 bytes / 256 values): 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits),
// 16 int8 scales (one per 16 values), fp16 d last. value = d * scale * (q - 32). Each half of
// 128 values uses 64 ql bytes and 32 qh bytes: values l, l+32, l+64, l+96 take ql[l] low,
// ql[l+32] low, ql[l] high, ql[l+32] high nibbles and bit pairs 0, 2, 4, 6 of qh[l].
void q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = load_f16(b + 208);
  for (int half = 0; half < 2; ++half) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = int((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = int((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * float(sc[is]) * float(q1);
      y[l + 32] = d * float(sc[is + 2]) * float(q2);
      y[l + 64] = d * float(sc[is + 4]) * float(q3);
      y[l + 96] = d * float(sc[is + 6]) * float(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

}  // namespace

bool gguf_can_dequantize(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
    case GgmlType::kQ8_0:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
      return true;
    default:
      return false;
  }
}

void dequantize_blocks(GgmlType type, std::span<const std::byte> data, size_t first_block,
                       size_t num_blocks, float* out) {
  const GgmlBlockLayout layout = ggml_block_layout(type);
  const size_t bb = size_t(layout.block_bytes), be = size_t(layout.block_elements);
  const uint8_t* base = reinterpret_cast<const uint8_t*>(data.data()) + first_block * bb;
  void (*block_fn)(const uint8_t*, float*) = nullptr;
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(out, base, num_blocks * sizeof(float));
      return;
    case GgmlType::kF16:
      for (size_t k = 0; k < num_blocks; ++k) out[k] = load_f16(base + 2 * k);
      return;
    case GgmlType::kBF16:
      for (size_t k = 0; k < num_blocks; ++k) out[k] = bf16_to_float(load_u16(base + 2 * k));
      return;
    case GgmlType::kQ4_0:
      block_fn = q4_0;
      break;
    case GgmlType::kQ4_1:
      block_fn = q4_1;
      break;
    case GgmlType::kQ8_0:
      block_fn = q8_0;
      break;
    case GgmlType::kQ4_K:
      block_fn = q4_k;
      break;
    case GgmlType::kQ5_K:
      block_fn = q5_k;
      break;
    case GgmlType::kQ6_K:
      block_fn = q6_k;
      break;
    default:
      fail("cannot dequantize ggml type {}", ggml_type_name(type) ? ggml_type_name(type) : "?");
  }
  for (size_t k = 0; k < num_blocks; ++k) block_fn(base + k * bb, out + k * be);
}

}  // namespace relayllm
