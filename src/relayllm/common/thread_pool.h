// A fixed pool of worker threads for data-parallel loops. Each owner (a backend,
// a test) holds its own pool; there is no process-wide instance.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace relayllm {

class ThreadPool {
 public:
  // num_threads <= 0 means one per hardware thread.
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }

  // Calls fn(begin, end) over disjoint chunks covering [0, n); the calling thread
  // works too. Chunks are at least `grain` long so tiny loops stay on one thread.
  void parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn, size_t grain = 1);

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(size_t, size_t)>* task_ = nullptr;
  size_t task_n_ = 0;
  size_t chunk_ = 0;
  size_t next_chunk_ = 0;
  size_t num_chunks_ = 0;
  int active_ = 0;
  unsigned generation_ = 0;
  bool stop_ = false;
};

}  // namespace relayllm
