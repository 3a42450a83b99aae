#include "relayllm/engine/grammar_mask_worker.h"

#include <spdlog/fmt/fmt.h>

#include <chrono>

namespace relayllm {

GrammarMaskWorker::GrammarMaskWorker(int threads)
    : pool_(threads > 1 ? std::make_unique<ThreadPool>(threads) : nullptr),
      thread_([this] { run(); }) {}

GrammarMaskWorker::~GrammarMaskWorker() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void GrammarMaskWorker::fill(const std::vector<Sequence*>& seqs) {
  for (Sequence* seq : seqs) {
    try {
      seq->grammar->fill_next_token_bitmask(seq->token_bitmask);
    } catch (const std::exception& e) {
      seq->grammar_error = fmt::format("structured output: {}", e.what());
    }
  }
}

void GrammarMaskWorker::fill(const std::vector<Sequence*>& seqs, ThreadPool& pool) {
  pool.parallel_for(seqs.size(), [&](size_t begin, size_t end) {
    fill(std::vector<Sequence*>(seqs.begin() + std::ptrdiff_t(begin),
                                seqs.begin() + std::ptrdiff_t(end)));
  });
}

void GrammarMaskWorker::start(std::vector<Sequence*> seqs) {
  wait();  // one batch at a time: the sequences of the previous one are the caller's again
  if (seqs.empty()) return;
  stats_.masks += int64_t(seqs.size());
  {
    std::lock_guard lock(mu_);
    pending_ = std::move(seqs);
    busy_ = true;
  }
  cv_.notify_all();
}

void GrammarMaskWorker::wait() {
  const auto start = std::chrono::steady_clock::now();
  std::unique_lock lock(mu_);
  const bool waited = busy_;
  cv_.wait(lock, [&] { return !busy_; });
  stats_.fill_seconds = fill_seconds_;  // the worker's total, whether or not this call waited
  if (waited)
    stats_.wait_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void GrammarMaskWorker::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || !pending_.empty(); });
    if (stop_) return;
    std::vector<Sequence*> seqs = std::move(pending_);
    pending_.clear();
    lock.unlock();
    const auto start = std::chrono::steady_clock::now();
    if (pool_)  // never throws: errors stay with their sequence
      fill(seqs, *pool_);
    else
      fill(seqs);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    lock.lock();
    fill_seconds_ += seconds;
    busy_ = false;
    cv_.notify_all();
  }
}

}  // namespace relayllm
