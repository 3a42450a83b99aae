// out[T, N] = x[T, K] * W[N, K]^T: the CPU backend's GEMM. Work is split over
// output columns so each thread streams its own slice of W once per row tile.
#include <algorithm>

#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/common/error.h"

namespace relayllm {
namespace {

constexpr int kRowTile = 4;  // rows of x sharing each load of a W row
constexpr int kLanes = 8;    // independent partial sums, so the compiler can vectorise

// Dots kRowTile rows of x with one W row. Separate accumulators keep the summation
// order fixed (results do not depend on the thread count).
void dot_tile(const float* const* xs, int rows, const float* w, int64_t k, float* out) {
  float acc[kRowTile][kLanes] = {};
  int64_t k_main = k - k % kLanes;
  for (int64_t i = 0; i < k_main; i += kLanes)
    for (int r = 0; r < kRowTile; ++r) {
      if (r >= rows) break;
      for (int l = 0; l < kLanes; ++l) acc[r][l] += xs[r][i + l] * w[i + l];
    }
  for (int r = 0; r < rows; ++r) {
    float tail = 0;
    for (int64_t i = k_main; i < k; ++i) tail += xs[r][i] * w[i];
    float sum = tail;
    for (int l = 0; l < kLanes; ++l) sum += acc[r][l];
    out[r] = sum;
  }
}

}  // namespace

void CpuBackend::linear(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor& out) {
  // The shapes are checked here for every weight format.
  const int64_t k = weight.cols(), n = weight.rows(), t = x.numel() / k;
  RELAYLLM_CHECK(x.cols() == k, "linear: input has {} columns, weight expects {}", x.cols(), k);
  RELAYLLM_CHECK(out.numel() == t * n, "linear: output holds {} values, needs {}", out.numel(),
                 t * n);
  if (weight.format == WeightFormat::kFP8) return linear_fp8(x, weight, bias, out);
  if (weight.format != WeightFormat::kNone) return linear_blocks(x, weight, bias, out);
  const float* xd = x.data<float>();
  const float* wd = weight.data<float>();
  const float* bd = bias ? bias->data<float>() : nullptr;
  float* od = out.data<float>();
  pool_.parallel_for(
      size_t(n),
      [&](size_t nb, size_t ne) {
        const float* xs[kRowTile];
        float partial[kRowTile];
        for (int64_t r0 = 0; r0 < t; r0 += kRowTile) {
          int rows = int(std::min<int64_t>(kRowTile, t - r0));
          for (int r = 0; r < rows; ++r) xs[r] = xd + (r0 + r) * k;
          for (size_t j = nb; j < ne; ++j) {
            dot_tile(xs, rows, wd + j * k, k, partial);
            for (int r = 0; r < rows; ++r) od[(r0 + r) * n + j] = partial[r] + (bd ? bd[j] : 0.0f);
          }
        }
      },
      8);
}

}  // namespace relayllm
