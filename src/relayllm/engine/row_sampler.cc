#include "relayllm/engine/row_sampler.h"

#include <algorithm>

namespace relayllm {

RowSampler::RowSampler(int threads)
    : pool_(threads > 1 ? std::make_unique<ThreadPool>(threads) : nullptr),
      scratch_(size_t(std::max(threads, 1))) {}

void RowSampler::run(size_t n, const std::function<void(size_t, std::vector<float>&)>& work) {
  // Small batches stay on the calling thread: waking the pool costs more than a few rows.
  constexpr size_t kMinRowsPerRange = 4;
  const size_t ranges = pool_ ? std::min(scratch_.size(), n / kMinRowsPerRange) : 1;
  if (ranges <= 1) {
    for (size_t i = 0; i < n; ++i) work(i, scratch_[0]);
    return;
  }
  // Range r is rows [r * n / ranges, (r + 1) * n / ranges) with scratch r, so no two threads
  // share a buffer whichever thread takes which range.
  pool_->parallel_for(ranges, [&](size_t begin, size_t end) {
    for (size_t r = begin; r < end; ++r)
      for (size_t i = r * n / ranges; i < (r + 1) * n / ranges; ++i) work(i, scratch_[r]);
  });
}

}  // namespace relayllm
