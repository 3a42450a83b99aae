// Runs a step's per-sequence logits work (prompt logprobs, sampling) over a pool of threads.
// The work after each forward pass reads one vocabulary-wide row per sequence: 128k logits are
// half a megabyte, so a batch of 256 rows costs milliseconds on one core while a GPU waits for
// the next step. Every sequence's work touches only that sequence (its RNG, its logprobs, its
// matcher's mask), so spreading sequences over threads changes no result.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

#include "relayllm/common/thread_pool.h"

namespace relayllm {

class RowSampler {
 public:
  // threads: how many run the work at once (the calling thread counts as one).
  explicit RowSampler(int threads = 1);

  // Calls work(i, scratch) for every i in [0, n): in order on the calling thread with one
  // thread, else over contiguous ranges of i, each range with its own scratch buffer (reused
  // across calls). `work` must not throw.
  void run(size_t n, const std::function<void(size_t, std::vector<float>&)>& work);

  int threads() const { return pool_ ? pool_->size() : 1; }

 private:
  std::unique_ptr<ThreadPool> pool_;
  std::vector<std::vector<float>> scratch_;  // one per range
};

}  // namespace relayllm
