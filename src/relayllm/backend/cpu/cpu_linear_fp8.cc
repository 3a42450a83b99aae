// out[T, N] = x[T, K] * W[N, K]^T for FP8 weights (WeightFormat::kFP8): the reference for
// the CUDA backend's FP8 GEMM, doing the same math (backend/fp8_weight.h). Each activation row
// is quantized to e4m3 with its own scale (or the checkpoint's static one), the codes are
// decoded back to fp32 (exact: e4m3 values are fp32 values), and every output is an fp32 dot
// product of decoded codes times the two scales. Products of two e4m3 values are exact in
// fp32, so the only rounding after quantization is the fp32 summation, as on the GPU.
#include <algorithm>
#include <array>
#include <cmath>

#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/backend/fp8_weight.h"
#include "relayllm/common/error.h"

namespace relayllm {
namespace {

constexpr int64_t kTokenTile = 8;  // tokens sharing each decode of a weight row
constexpr size_t kRowGrain = 16;   // weight rows per task at least

std::array<float, 256> e4m3_table() {
  std::array<float, 256> t{};
  for (int c = 0; c < 256; ++c) t[size_t(c)] = e4m3_to_float(uint8_t(c));
  return t;
}

}  // namespace

void CpuBackend::linear_fp8(const Tensor& x, const Tensor& weight, const Tensor* bias,
                            Tensor& out) {
  const int64_t k = weight.cols(), n = weight.rows(), t = x.numel() / k;
  static const std::array<float, 256> table = e4m3_table();  // constant after first use
  const Fp8WeightView w = fp8_weight_view(weight.data<std::byte>(), n, k);
  const float* xd = x.data<float>();
  const float* bd = bias ? bias->data<float>() : nullptr;
  float* od = out.data<float>();

  fp8_x_.resize(size_t(t * k));
  fp8_x_scales_.resize(size_t(t));
  float* xq = fp8_x_.data();
  float* sx = fp8_x_scales_.data();
  pool_.parallel_for(
      size_t(t),
      [&](size_t b, size_t e) {
        std::vector<uint8_t> codes(static_cast<size_t>(k));
        for (size_t r = b; r < e; ++r) {
          const float* row = xd + int64_t(r) * k;
          float scale = w.input_scale;
          if (scale == 0) {
            float absmax = 0;
            for (int64_t i = 0; i < k; ++i) absmax = std::max(absmax, std::fabs(row[i]));
            scale = fp8_dynamic_scale(absmax);
          }
          sx[r] = scale;
          fp8_quantize_row(row, k, scale, codes.data());
          for (int64_t i = 0; i < k; ++i) xq[int64_t(r) * k + i] = table[codes[size_t(i)]];
        }
      },
      4);
  pool_.parallel_for(
      size_t(n),
      [&](size_t nb, size_t ne) {
        std::vector<float> wrow(static_cast<size_t>(k));
        for (int64_t r0 = 0; r0 < t; r0 += kTokenTile)
          for (size_t j = nb; j < ne; ++j) {
            const uint8_t* codes = w.codes + j * size_t(k);
            for (int64_t i = 0; i < k; ++i) wrow[size_t(i)] = table[codes[i]];
            for (int64_t r = r0; r < std::min(t, r0 + kTokenTile); ++r) {
              const float* xr = xq + r * k;
              float acc = 0;
              for (int64_t i = 0; i < k; ++i) acc += xr[i] * wrow[size_t(i)];
              od[r * n + int64_t(j)] = (sx[r] * w.scales[j]) * acc + (bd ? bd[j] : 0.0f);
            }
          }
      },
      kRowGrain);
}

}  // namespace relayllm
