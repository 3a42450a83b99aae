// Fills the grammar token masks of one step's constrained sequences on a thread of its own, so
// that the engine thread runs the forward pass meanwhile. The mask of the token sampled in a
// step depends only on the tokens accepted before it, so it can be computed while the model
// computes that step's logits: on CUDA the forward is device work the engine thread only waits
// for; on the CPU backend the fill takes a share of the cores the forward's threads use.
//
// One persistent thread per engine (not a thread per step): a decode step of a small model is
// a few milliseconds on a GPU, and starting a thread costs tens of microseconds. With more than
// one thread, the thread spreads a step's sequences over a pool: a mask takes about 0.1 ms, so
// 16 constrained requests on one thread outlast a small model's forward pass on a GPU, and the
// engine would wait. Each sequence's matcher is its own, so the masks do not depend on the split.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "relayllm/common/thread_pool.h"
#include "relayllm/engine/sequence.h"

namespace relayllm {

struct GrammarMaskStats {
  int64_t masks = 0;        // masks filled (one per constrained sequence per sampled token)
  double fill_seconds = 0;  // time the worker spent filling them
  double wait_seconds = 0;  // time the engine thread waited for them after its forward pass
};

class GrammarMaskWorker {
 public:
  // threads: how many fill masks at once (the worker's own thread counts as one).
  explicit GrammarMaskWorker(int threads = 1);
  ~GrammarMaskWorker();
  GrammarMaskWorker(const GrammarMaskWorker&) = delete;
  GrammarMaskWorker& operator=(const GrammarMaskWorker&) = delete;

  // Starts filling seq->token_bitmask for each sequence (an error goes to seq->grammar_error).
  // The sequences must stay alive and untouched by the caller until wait() returns.
  void start(std::vector<Sequence*> seqs);
  // Blocks until the masks of the last start() are filled; a no-op when none is pending.
  void wait();

  const GrammarMaskStats& stats() const { return stats_; }

  // Fills the masks on the calling thread.
  static void fill(const std::vector<Sequence*>& seqs);
  // The same, spread over `pool` (the calling thread works too).
  static void fill(const std::vector<Sequence*>& seqs, ThreadPool& pool);

 private:
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Sequence*> pending_;    // guarded by mu_
  bool busy_ = false;                 // a batch is pending or being filled (guarded by mu_)
  bool stop_ = false;                 // guarded by mu_
  double fill_seconds_ = 0;           // all batches so far (guarded by mu_)
  GrammarMaskStats stats_;            // the engine thread's
  std::unique_ptr<ThreadPool> pool_;  // only with more than one thread; used by thread_ alone
  std::thread thread_;                // last: started once the members above exist
};

}  // namespace relayllm
