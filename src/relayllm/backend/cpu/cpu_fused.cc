// Stacked projection weights on the CPU backend. The numbers are always those of separate
// weights. On the block kernels (decode: a few rows, weights in GGUF block formats) a fused
// op quantizes its input once and runs every part's rows in one threaded loop: as separate
// ops, a decode step at one token was 7 matvecs of 10-60 us per layer, where each op's
// dispatch to the pool and activation quantization were a visible share. gate and up rows go in
// pairs, so the silu product is written as soon as both dots are known (no separate silu_mul pass).
// Elsewhere (fp32 reference, FP8, the sgemm prefill path) each part runs as its own linear
// op over a view of its rows.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/common/error.h"

namespace relayllm {
namespace {

// Rows [first, first + count) of a stacked weight, sharing its storage.
Tensor row_view(const Tensor& w, int64_t first, int64_t count) {
  const size_t row_bytes = w.bytes() / size_t(w.rows());
  Tensor v = w;
  v.storage = std::shared_ptr<void>(w.storage, w.data<std::byte>() + size_t(first) * row_bytes);
  v.shape = {count, w.cols()};
  return v;
}

constexpr int64_t kFusedTokenTile = 8;  // tokens sharing each read of a weight row
constexpr size_t kFusedRowGrain = 16;   // weight rows (row pairs for gate/up) per task at least

}  // namespace

Tensor CpuBackend::fuse_rows(std::span<const Tensor> parts) {
  if (parts.size() < 2) return {};
  int64_t rows = 0;
  size_t bytes = 0;
  for (const Tensor& p : parts) {
    // FP8 weights carry per-row scales after their codes (backend/fp8_weight.h): kept apart.
    if (!p.defined() || p.shape.size() != 2 || p.format != parts[0].format ||
        p.format == WeightFormat::kFP8 || p.dtype != DType::kF32 || p.cols() != parts[0].cols())
      return {};
    rows += p.rows();
    bytes += p.bytes();
  }
  const size_t size = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  void* mem = std::aligned_alloc(64, size);
  RELAYLLM_CHECK(mem != nullptr, "cpu backend: out of memory for {} bytes of weights", size);
  Tensor fused;
  fused.storage = std::shared_ptr<void>(mem, [](void* q) { std::free(q); });
  fused.dtype = DType::kF32;
  fused.format = parts[0].format;
  fused.shape = {rows, parts[0].cols()};
  size_t offset = 0;
  for (const Tensor& p : parts) {
    std::memcpy(static_cast<std::byte*>(mem) + offset, p.storage.get(), p.bytes());
    offset += p.bytes();
  }
  return fused;
}

void CpuBackend::linear_parts(const Tensor& x, const Tensor& fused,
                              std::span<const Tensor* const> biases,
                              std::span<Tensor* const> outs) {
  RELAYLLM_CHECK(biases.size() == outs.size(), "linear_parts: {} biases for {} outputs",
                 biases.size(), outs.size());
  const int64_t k = fused.cols(), t = x.numel() / k;
  // first[p]: the stacked weight's first row of part p; first[outs.size()]: all its rows.
  std::vector<int64_t> first(outs.size() + 1, 0);
  for (size_t p = 0; p < outs.size(); ++p) {
    first[p + 1] = first[p] + outs[p]->cols();
    RELAYLLM_CHECK(first[p + 1] <= fused.rows(), "linear_parts: outputs take more than {} rows",
                   fused.rows());
  }
  RELAYLLM_CHECK(first.back() == fused.rows(),
                 "linear_parts: outputs take {} rows of a {}-row weight", first.back(),
                 fused.rows());
  if (!uses_block_kernels(fused, t)) {
    for (size_t p = 0; p < outs.size(); ++p)
      linear(x, row_view(fused, first[p], first[p + 1] - first[p]), biases[p], *outs[p]);
    return;
  }
  for (size_t p = 0; p < outs.size(); ++p) {
    const int64_t n = first[p + 1] - first[p];
    RELAYLLM_CHECK(outs[p]->numel() == t * n, "linear: output holds {} values, needs {}",
                   outs[p]->numel(), t * n);
    RELAYLLM_CHECK(biases[p] == nullptr || biases[p]->numel() == n,
                   "linear_parts: a bias of {} values for a part of {} rows",
                   biases[p] ? biases[p]->numel() : 0, n);
  }
  const size_t row_bytes = fused.bytes() / size_t(fused.rows());
  const std::byte* wd = fused.data<std::byte>();
  const BlockDot dot = prepare_block_dot(x, fused);
  pool_.parallel_for(
      size_t(fused.rows()),
      [&](size_t jb, size_t je) {
        for (int64_t r0 = 0; r0 < t; r0 += kFusedTokenTile) {
          const int64_t r1 = std::min(t, r0 + kFusedTokenTile);
          size_t p = 0;
          for (int64_t j = int64_t(jb); j < int64_t(je); ++j) {
            while (j >= first[p + 1]) ++p;
            const int64_t n = first[p + 1] - first[p], c = j - first[p];
            float* o = outs[p]->data<float>();
            const float b = biases[p] ? biases[p]->data<float>()[c] : 0.0f;
            for (int64_t r = r0; r < r1; ++r) o[r * n + c] = dot(wd + size_t(j) * row_bytes, r) + b;
          }
        }
      },
      kFusedRowGrain);
}

void CpuBackend::linear_silu_mul(const Tensor& x, const Tensor& gate_up, Tensor& gate, Tensor& up,
                                 Tensor& out) {
  const int64_t inter = gate_up.rows() / 2;
  RELAYLLM_CHECK(gate_up.rows() == 2 * inter && gate.cols() == inter && up.cols() == inter,
                 "linear_silu_mul: a {}-row weight for gate and up of {} and {} columns",
                 gate_up.rows(), gate.cols(), up.cols());
  const int64_t k = gate_up.cols(), t = x.numel() / k;
  if (!uses_block_kernels(gate_up, t)) {
    linear(x, row_view(gate_up, 0, inter), nullptr, gate);
    linear(x, row_view(gate_up, inter, inter), nullptr, up);
    silu_mul(gate, up, out);
    return;
  }
  RELAYLLM_CHECK(gate.numel() == t * inter && up.numel() == t * inter && out.numel() == t * inter,
                 "linear_silu_mul: outputs of {}, {} and {} values, need {}", gate.numel(),
                 up.numel(), out.numel(), t * inter);
  const size_t row_bytes = gate_up.bytes() / size_t(gate_up.rows());
  const std::byte* gw = gate_up.data<std::byte>();
  const std::byte* uw = gw + size_t(inter) * row_bytes;
  float* g = gate.data<float>();
  float* u = up.data<float>();
  float* o = out.data<float>();
  const BlockDot dot = prepare_block_dot(x, gate_up);
  pool_.parallel_for(
      size_t(inter),
      [&](size_t jb, size_t je) {
        for (int64_t r0 = 0; r0 < t; r0 += kFusedTokenTile)
          for (size_t j = jb; j < je; ++j)
            for (int64_t r = r0; r < std::min(t, r0 + kFusedTokenTile); ++r) {
              const size_t i = size_t(r * inter) + j;
              g[i] = dot(gw + j * row_bytes, r);
              u[i] = dot(uw + j * row_bytes, r);
              // silu_mul's expression, so the result is that of the separate ops.
              o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
            }
      },
      kFusedRowGrain / 2);
}

}  // namespace relayllm
