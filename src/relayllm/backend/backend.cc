#include "relayllm/backend/backend.h"

#include "relayllm/common/error.h"

namespace relayllm {

Tensor Backend::upload_blocks(WeightFormat format, std::span<const std::byte> bytes,
                              std::vector<int64_t> shape) {
  fail("backend {} does not take weights in format {}", name(), weight_format_name(format));
}

void Backend::all_reduce_sum(Tensor& x, Communicator& comm) {
  (void)x;
  (void)comm;
  fail("backend {} does not support tensor parallelism (--tensor-parallel-size > 1)", name());
}

}  // namespace relayllm

namespace relayllm {

// Reached only when fuse_rows returned a weight, which the default never does.
void Backend::linear_parts(const Tensor& x, const Tensor& fused,
                           std::span<const Tensor* const> biases, std::span<Tensor* const> outs) {
  fail("backend {} keeps no fused weights (linear_parts)", name());
}

void Backend::linear_silu_mul(const Tensor& x, const Tensor& gate_up, Tensor& gate, Tensor& up,
                              Tensor& out) {
  fail("backend {} keeps no fused weights (linear_silu_mul)", name());
}

}  // namespace relayllm
