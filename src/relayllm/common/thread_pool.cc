#include "relayllm/common/thread_pool.h"

#include <algorithm>

namespace relayllm {

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = std::max(1u, std::thread::hardware_concurrency());
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void ThreadPool::parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn,
                              size_t grain) {
  if (n == 0) return;
  grain = std::max<size_t>(grain, 1);
  size_t max_chunks = (n + grain - 1) / grain;
  size_t chunks = std::min<size_t>(max_chunks, size_t(size()) * 4);
  if (chunks <= 1 || workers_.empty()) {
    fn(0, n);
    return;
  }
  std::unique_lock lock(mutex_);
  task_ = &fn;
  task_n_ = n;
  num_chunks_ = chunks;
  chunk_ = (n + chunks - 1) / chunks;
  next_chunk_ = 0;
  active_ = int(workers_.size());
  ++generation_;
  wake_.notify_all();
  // The caller takes chunks too, then waits for the workers to drain.
  while (next_chunk_ < num_chunks_) {
    size_t c = next_chunk_++;
    lock.unlock();
    size_t begin = c * chunk_, end = std::min(n, begin + chunk_);
    if (begin < end) fn(begin, end);
    lock.lock();
  }
  done_.wait(lock, [this] { return active_ == 0; });
  task_ = nullptr;
}

void ThreadPool::worker_loop(int) {
  unsigned seen = 0;
  std::unique_lock lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    while (next_chunk_ < num_chunks_) {
      size_t c = next_chunk_++;
      lock.unlock();
      size_t begin = c * chunk_, end = std::min(task_n_, begin + chunk_);
      if (begin < end) (*task_)(begin, end);
      lock.lock();
    }
    if (--active_ == 0) done_.notify_all();
  }
}

}  // namespace relayllm
