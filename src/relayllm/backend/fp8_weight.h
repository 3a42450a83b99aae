// FP8 linear weights (WeightFormat::kFP8) and the activation quantization that goes with
// them, shared by the CPU reference and the CUDA backend so both do the same math:
//
//   weight  W[N, K] ~= sw[n] * e4m3(W[n, :] / sw[n]),  sw[n] = max|W[n, :]| / 448
//   input   x[T, K] ~= sx[t] * e4m3(x[t, :] / sx[t]),  sx[t] = max|x[t, :]| / 448 (dynamic,
//           per token) or sx[t] = s for all t (a checkpoint's static input_scale)
//   out[t, n] = (sx[t] * sw[n]) * sum_k e4m3(x)[t, k] * e4m3(W)[n, k]   (fp32 accumulation)
//
// Bytes of a [N, K] kFP8 weight: N*K e4m3 codes row-major, then N fp32 weight scales, then one
// fp32 input scale (0: dynamic per-token scales). A per-tensor checkpoint scale is stored as N
// equal per-row scales.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "relayllm/common/fp8.h"

namespace relayllm {

// cuBLASLt's FP8 GEMM needs K (and so every row's byte stride) a multiple of 16; a weight with
// other columns is not quantized.
inline constexpr int64_t kFp8ColumnMultiple = 16;

struct Fp8WeightView {
  const uint8_t* codes = nullptr;  // [rows, cols]
  const float* scales = nullptr;   // [rows]
  float input_scale = 0;           // 0: dynamic per-token
};

// A view of the bytes of a [rows, cols] kFP8 weight (weight_bytes(kFP8, rows, cols) of them).
inline Fp8WeightView fp8_weight_view(const void* bytes, int64_t rows, int64_t cols) {
  const auto* p = static_cast<const uint8_t*>(bytes);
  Fp8WeightView v;
  v.codes = p;
  v.scales = reinterpret_cast<const float*>(p + size_t(rows) * size_t(cols));
  std::memcpy(&v.input_scale, p + size_t(rows) * size_t(cols) + 4 * size_t(rows), 4);
  return v;
}

// The per-token scale of a row whose largest magnitude is `absmax` (1 for an all-zero row, so
// the codes are zeros and the scale finite).
inline float fp8_dynamic_scale(float absmax) { return absmax > 0 ? absmax / kE4m3Max : 1.0f; }

// Codes of `values` divided by `scale`, computed as values * (1 / scale), the GPU's order of
// operations, so both backends produce the same codes.
inline void fp8_quantize_row(const float* values, int64_t n, float scale, uint8_t* codes) {
  const float inv = 1.0f / scale;
  for (int64_t i = 0; i < n; ++i) codes[i] = float_to_e4m3(values[i] * inv);
}

// A [rows, cols] fp32 weight as kFP8 bytes with per-row scales (input scale: dynamic).
std::vector<std::byte> quantize_fp8_weight(std::span<const float> values, int64_t rows,
                                           int64_t cols);

// kFP8 bytes from codes and scales already computed (a checkpoint's): `scales` has `rows`
// entries, or one (per-tensor), repeated per row.
std::vector<std::byte> pack_fp8_weight(std::span<const uint8_t> codes,
                                       std::span<const float> scales, int64_t rows, int64_t cols,
                                       float input_scale);

// Row r of a kFP8 weight back to fp32 (sw[r] * code values).
void dequantize_fp8_row(const Fp8WeightView& w, int64_t r, int64_t cols, float* out);

}  // namespace relayllm
