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
