// out[T, N] = x[T, K] * W[N, K]^T for W in a block format (GGUF quantized or 16-bit floats).
// Quantized formats: x is quantized once per op (per 32 values, int8 + fp32 scale), then
// every output is an integer dot product of a weight row with an activation row.
// Work is split over output rows (W's rows): at one token (decode) the op is a matvec that
// streams W once, so the threads share the bytes of W, not the tokens. Each thread walks
// its rows for a tile of tokens at a time, so a weight row is read from memory once per
// tile and from L1 for the tile's other tokens (prefill).
#include <algorithm>

#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/common/error.h"

namespace relayllm {
namespace {

constexpr int64_t kTokenTile = 8;  // tokens sharing each read of a weight row
constexpr size_t kRowGrain = 16;   // weight rows per task at least

// out[r, j] = row_dot(j, r) (+ bias[j]) for the weight rows [nb, ne) of a task and every token
// r < t, a tile of kTokenTile tokens at a time.
template <typename RowDot>
void tile_rows(size_t nb, size_t ne, int64_t t, int64_t n, const float* bias, float* out,
               const RowDot& row_dot) {
  for (int64_t r0 = 0; r0 < t; r0 += kTokenTile)
    for (size_t j = nb; j < ne; ++j)
      for (int64_t r = r0; r < std::min(t, r0 + kTokenTile); ++r)
        out[r * n + int64_t(j)] = row_dot(j, r) + (bias ? bias[j] : 0.0f);
}

}  // namespace

bool CpuBackend::uses_block_kernels(const Tensor& weight, int64_t t) const {
  return weight.format != WeightFormat::kNone && weight.format != WeightFormat::kFP8 &&
         !(sgemm_min_rows_ > 0 && t >= sgemm_min_rows_);
}

CpuBackend::BlockDot CpuBackend::prepare_block_dot(const Tensor& x, const Tensor& weight) {
  const int64_t k = weight.cols(), t = x.numel() / k;
  RELAYLLM_CHECK(x.cols() == k, "linear: input has {} columns, weight expects {}", x.cols(), k);
  BlockDot dot;
  dot.k = k;
  dot.x = x.data<float>();
  const int f = int(weight.format);
  if (weight.format == WeightFormat::kF16 || weight.format == WeightFormat::kBF16) {
    dot.half = kernels_->half_dot[f];
    return dot;
  }
  dot.quant = kernels_->dot[f];
  RELAYLLM_CHECK(dot.quant != nullptr && k % cpu_quant::kActBlock == 0,
                 "linear: no kernel for {} weights of {} columns",
                 weight_format_name(weight.format), k);
  dot.blocks = k / cpu_quant::kActBlock;
  act_.resize(size_t(t * dot.blocks));
  cpu_quant::ActBlock* act = act_.data();
  const cpu_quant::QuantizeRowFn quantize = kernels_->quantize_row;
  const float* xd = dot.x;
  const int64_t blocks = dot.blocks;
  pool_.parallel_for(
      size_t(t),
      [&](size_t b, size_t e) {
        for (size_t r = b; r < e; ++r) quantize(xd + r * k, k, act + r * blocks);
      },
      16);
  dot.act = act;
  return dot;
}

void CpuBackend::linear_blocks(const Tensor& x, const Tensor& weight, const Tensor* bias,
                               Tensor& out) {
  const int64_t k = weight.cols(), n = weight.rows(), t = x.numel() / k;
  // Prefill: a tuned fp32 GEMM on dequantized panels (cpu_linear_sgemm.cc).
  if (!uses_block_kernels(weight, t)) return linear_blocks_sgemm(x, weight, bias, out);
  const size_t row_bytes = weight.bytes() / size_t(n);
  const std::byte* wd = weight.data<std::byte>();
  const float* bd = bias ? bias->data<float>() : nullptr;
  float* od = out.data<float>();
  const BlockDot dot = prepare_block_dot(x, weight);
  pool_.parallel_for(
      size_t(n),
      [&](size_t nb, size_t ne) {
        tile_rows(nb, ne, t, n, bd, od,
                  [&](size_t j, int64_t r) { return dot(wd + j * row_bytes, r); });
      },
      kRowGrain);
}

}  // namespace relayllm
