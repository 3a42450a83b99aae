#include "relayllm/backend/fp8_weight.h"

#include <algorithm>
#include <cmath>

#include "relayllm/common/error.h"

namespace relayllm {

std::vector<std::byte> pack_fp8_weight(std::span<const uint8_t> codes,
                                       std::span<const float> scales, int64_t rows, int64_t cols,
                                       float input_scale) {
  RELAYLLM_CHECK(codes.size() == size_t(rows) * size_t(cols), "fp8 weight: {} codes for [{}, {}]",
                 codes.size(), rows, cols);
  RELAYLLM_CHECK(scales.size() == size_t(rows) || scales.size() == 1,
                 "fp8 weight: {} scales for {} rows (one per row, or one)", scales.size(), rows);
  std::vector<std::byte> out(codes.size() + 4 * size_t(rows) + 4);
  std::memcpy(out.data(), codes.data(), codes.size());
  float* s = reinterpret_cast<float*>(out.data() + codes.size());
  for (int64_t r = 0; r < rows; ++r) s[r] = scales.size() == 1 ? scales[0] : scales[size_t(r)];
  std::memcpy(out.data() + codes.size() + 4 * size_t(rows), &input_scale, 4);
  return out;
}

std::vector<std::byte> quantize_fp8_weight(std::span<const float> values, int64_t rows,
                                           int64_t cols) {
  RELAYLLM_CHECK(values.size() == size_t(rows) * size_t(cols), "fp8 weight: {} values for [{}, {}]",
                 values.size(), rows, cols);
  std::vector<std::byte> out(values.size() + 4 * size_t(rows) + 4);
  auto* codes = reinterpret_cast<uint8_t*>(out.data());
  float* scales = reinterpret_cast<float*>(out.data() + values.size());
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = values.data() + size_t(r) * size_t(cols);
    float absmax = 0;
    for (int64_t i = 0; i < cols; ++i) absmax = std::max(absmax, std::fabs(row[i]));
    scales[r] = fp8_dynamic_scale(absmax);
    fp8_quantize_row(row, cols, scales[r], codes + size_t(r) * size_t(cols));
  }
  const float dynamic = 0;
  std::memcpy(out.data() + values.size() + 4 * size_t(rows), &dynamic, 4);
  return out;
}

void dequantize_fp8_row(const Fp8WeightView& w, int64_t r, int64_t cols, float* out) {
  const uint8_t* codes = w.codes + size_t(r) * size_t(cols);
  for (int64_t i = 0; i < cols; ++i) out[i] = w.scales[r] * e4m3_to_float(codes[i]);
}

}  // namespace relayllm
