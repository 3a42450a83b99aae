#include "relayllm/common/thread_pool.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <chrono>

namespace relayllm {
namespace {

// How long an idle worker spins before it sleeps: longer than the gap between two ops of
// a step (serial work on the calling thread: norms, attention of one row, sampling
// setup), short enough that an idle engine stops using the CPU at once.
constexpr auto kSpin = std::chrono::microseconds(300);

// A few pause instructions first (the other side is running and almost done), then give
// the core away at each turn: on a machine with more runnable threads than cores, the
// thread being waited for may need exactly this core to make progress.
inline void cpu_relax(int turn) {
  if (turn < 64) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  } else {
    std::this_thread::yield();
  }
}

std::vector<int> usable_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

}  // namespace

int usable_cpu_count() {
  const size_t n = usable_cpus().size();
  return n > 0 ? int(n) : int(std::max(1u, std::thread::hardware_concurrency()));
}

ThreadPool::ThreadPool(int num_threads, bool pin) {
  if (num_threads <= 0) num_threads = usable_cpu_count();
  const std::vector<int> cpus = pin ? usable_cpus() : std::vector<int>{};
  for (int i = 1; i < num_threads; ++i) {
    workers_.emplace_back([this, i] { worker_loop(i); });
    if (!cpus.empty()) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpus[size_t(i) % cpus.size()], &set);
      pthread_setaffinity_np(workers_.back().native_handle(), sizeof(set), &set);
    }
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stop_.store(true);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void ThreadPool::run_chunks() {
  for (size_t c = next_chunk_.fetch_add(1); c < num_chunks_; c = next_chunk_.fetch_add(1)) {
    const size_t begin = c * chunk_, end = std::min(task_n_, begin + chunk_);
    if (begin < end) (*task_)(begin, end);
  }
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
  task_ = &fn;
  task_n_ = n;
  num_chunks_ = chunks;
  chunk_ = (n + chunks - 1) / chunks;
  next_chunk_.store(0);
  pending_.store(int(workers_.size()));
  bool wake;
  {
    std::lock_guard lock(mutex_);
    generation_.fetch_add(1, std::memory_order_release);
    wake = sleepers_ > 0;
  }
  if (wake) wake_.notify_all();
  run_chunks();
  // Workers finish their last chunk within microseconds; spin first, sleep if they lag
  // (a worker descheduled on a busy machine).
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0; pending_.load(std::memory_order_acquire) > 0; ++i) {
    cpu_relax(i);
    if ((i & 15) == 15 && std::chrono::steady_clock::now() > until) {
      std::unique_lock lock(mutex_);
      done_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
      break;
    }
  }
  task_ = nullptr;
}

void ThreadPool::worker_loop(int) {
  unsigned seen = 0;
  while (true) {
    const auto until = std::chrono::steady_clock::now() + kSpin;
    for (int i = 0; generation_.load(std::memory_order_acquire) == seen; ++i) {
      cpu_relax(i);
      if ((i & 15) == 15 && std::chrono::steady_clock::now() > until) {
        std::unique_lock lock(mutex_);
        ++sleepers_;
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        --sleepers_;
        break;
      }
    }
    if (stop_.load()) return;
    seen = generation_.load(std::memory_order_acquire);
    run_chunks();
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard lock(mutex_);
      done_.notify_one();
    }
  }
}

}  // namespace relayllm
