// Prefill on block weights through OpenBLAS: out[T, N] = x[T, K] * W[N, K]^T with W's rows
// dequantized to fp32 a panel at a time and multiplied by sgemm. At many rows the op is
// compute-bound, and a tuned fp32 GEMM (register-blocked, packed panels) beats the
// integer dot kernels, whose cost is per (token, weight block) pair: measured in
// bench/results/cpu_prefill_2026-12-05.md. The dequantized panel (kPanelRows weight rows)
// stays in L2 while sgemm streams every token of x past it, so decoding W costs once per
// op, not once per token. Quantized weights take the integer kernels' 8-bit activations
// (below). OpenBLAS is opened at run time (openblas_library.h); the backend takes this path
// only when it was found.
#include <algorithm>
#include <vector>

#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/backend/cpu/openblas_library.h"
#include "relayllm/backend/cpu/quant_dequant.h"
#include "relayllm/common/error.h"

namespace relayllm {
namespace {

// 64 rows of K <= 2048 fp32 values: <= 512 KiB, within a core's L2 on current x86.
constexpr int64_t kPanelRows = 64;

}  // namespace

void CpuBackend::linear_blocks_sgemm(const Tensor& x, const Tensor& weight, const Tensor* bias,
                                     Tensor& out) {
  const openblas::Library* blas = openblas::library();
  RELAYLLM_CHECK(blas != nullptr, "cpu backend: the sgemm path needs OpenBLAS");
  const int64_t k = weight.cols(), n = weight.rows(), t = x.numel() / k;
  const size_t row_bytes = weight.bytes() / size_t(n);
  const std::byte* wd = weight.data<std::byte>();
  const float* xd = x.data<float>();
  const float* bd = bias ? bias->data<float>() : nullptr;
  float* od = out.data<float>();
  if (weight.format != WeightFormat::kF16 && weight.format != WeightFormat::kBF16) {
    // The same 8-bit activations as the integer kernels (x ~= d q per 32 values), so a row's
    // result differs from the integer path only by fp32 rounding, not by the activation
    // rounding: a request's greedy output then does not depend on how many rows its step
    // had (prefix-cache hits, chunked prefill, batching move rows across the switch).
    const int64_t blocks = k / cpu_quant::kActBlock;
    act_.resize(size_t(t * blocks));
    x_rounded_.resize(size_t(t * k));
    cpu_quant::ActBlock* act = act_.data();
    float* xr = x_rounded_.data();
    const cpu_quant::QuantizeRowFn quantize = kernels_->quantize_row;
    pool_.parallel_for(
        size_t(t),
        [&](size_t b, size_t e) {
          for (size_t r = b; r < e; ++r) {
            quantize(xd + r * size_t(k), k, act + r * size_t(blocks));
            for (int64_t i = 0; i < k; ++i) {
              const cpu_quant::ActBlock& a =
                  act[r * size_t(blocks) + size_t(i / cpu_quant::kActBlock)];
              xr[r * size_t(k) + size_t(i)] = a.d * float(a.qs[i % cpu_quant::kActBlock]);
            }
          }
        },
        16);
    xd = xr;
  }
  pool_.parallel_for(
      size_t(n),
      [&](size_t nb, size_t ne) {
        std::vector<float> panel(size_t(std::min<int64_t>(kPanelRows, int64_t(ne - nb)) * k));
        for (size_t p0 = nb; p0 < ne; p0 += kPanelRows) {
          const int64_t rows = std::min<int64_t>(kPanelRows, int64_t(ne - p0));
          for (int64_t j = 0; j < rows; ++j)
            cpu_quant::dequantize_row(weight.format, wd + (p0 + size_t(j)) * row_bytes, k,
                                      panel.data() + j * k);
          // out[:, p0:p0+rows] = x * panel^T (row-major, ldc = n).
          blas->sgemm(openblas::kRowMajor, openblas::kNoTrans, openblas::kTrans, int(t), int(rows),
                      int(k), 1.0f, xd, int(k), panel.data(), int(k), 0.0f, od + p0, int(n));
          if (bd)
            for (int64_t r = 0; r < t; ++r)
              for (int64_t j = 0; j < rows; ++j) od[r * n + int64_t(p0) + j] += bd[p0 + size_t(j)];
        }
      },
      size_t(kPanelRows));
}

}  // namespace relayllm
