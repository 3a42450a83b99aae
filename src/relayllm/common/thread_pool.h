// A fixed pool of worker threads for data-parallel loops. Each owner (a backend,
// a test) holds its own pool; there is no process-wide instance.
//
// Built for many short loops in a row (a decode step runs a few hundred ops of tens of
// microseconds each): between loops the workers spin for a short while on an atomic
// before they sleep, so a loop that follows soon after costs no futex wake-up.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace relayllm {

// CPUs this process may run on (sched_getaffinity), at least 1: what "one per core"
// means in a container or under taskset, where hardware_concurrency() counts too many.
int usable_cpu_count();

class ThreadPool {
 public:
  // num_threads <= 0 means one per usable CPU (usable_cpu_count()). With pin, worker i
  // is bound to the i-th usable CPU (the calling thread, which works too, is left free).
  explicit ThreadPool(int num_threads = 0, bool pin = false);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }

  // Calls fn(begin, end) over disjoint chunks covering [0, n); the calling thread
  // works too. Chunks are at least `grain` long so tiny loops stay on one thread.
  // One caller at a time.
  void parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn, size_t grain = 1);

 private:
  void worker_loop(int index);
  void run_chunks();

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  // Published by parallel_for before it bumps generation_ (release); read after (acquire).
  const std::function<void(size_t, size_t)>* task_ = nullptr;
  size_t task_n_ = 0;
  size_t chunk_ = 0;
  size_t num_chunks_ = 0;
  std::atomic<size_t> next_chunk_{0};
  std::atomic<int> pending_{0};  // workers yet to finish the current generation
  std::atomic<unsigned> generation_{0};
  std::atomic<bool> stop_{false};
  int sleepers_ = 0;  // guarded by mutex_
};

}  // namespace relayllm
