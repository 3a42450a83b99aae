// Stacked projection weights on the CPU backend. The reference keeps the numbers of
// separate weights: each part runs as its own linear op over a view of its rows. What
// the stacking buys here is that the model runs one code path on every backend (and
// the CPU tests cover the fused ops' wiring the CUDA backend speeds up).
#include <cstdlib>
#include <cstring>

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
  int64_t first = 0;
  for (size_t p = 0; p < outs.size(); ++p) {
    const int64_t n = outs[p]->cols();
    RELAYLLM_CHECK(first + n <= fused.rows(), "linear_parts: outputs take more than {} rows",
                   fused.rows());
    linear(x, row_view(fused, first, n), biases[p], *outs[p]);
    first += n;
  }
  RELAYLLM_CHECK(first == fused.rows(), "linear_parts: outputs take {} rows of a {}-row weight",
                 first, fused.rows());
}

void CpuBackend::linear_silu_mul(const Tensor& x, const Tensor& gate_up, Tensor& gate, Tensor& up,
                                 Tensor& out) {
  const int64_t inter = gate_up.rows() / 2;
  RELAYLLM_CHECK(gate_up.rows() == 2 * inter && gate.cols() == inter && up.cols() == inter,
                 "linear_silu_mul: a {}-row weight for gate and up of {} and {} columns",
                 gate_up.rows(), gate.cols(), up.cols());
  linear(x, row_view(gate_up, 0, inter), nullptr, gate);
  linear(x, row_view(gate_up, inter, inter), nullptr, up);
  silu_mul(gate, up, out);
}

}  // namespace relayllm
