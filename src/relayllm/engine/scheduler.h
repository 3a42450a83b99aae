// Decides what runs each step: continuous batching under a token budget.
// Running sequences go first (a decode costs one token, an unfinished prefill
// takes a chunk), then waiting ones in arrival order while budget, sequence
// slots and KV blocks last. When a running sequence needs a block and none is
// free, the latest-arrived running sequence is preempted: its blocks return to
// the pool and it waits to be recomputed from its tokens (vLLM's recompute).
// With prefix caching, a waiting sequence whose next full prompt block another
// running sequence is computing right now waits for it instead of computing a copy:
// requests that arrive together compute their common leading blocks once.
#pragma once

#include <cstdint>
#include <deque>
#include <unordered_map>
#include <vector>

#include "relayllm/engine/sequence.h"
#include "relayllm/kv/block_pool.h"

namespace relayllm {

struct SchedulerConfig {
  int32_t max_num_batched_tokens = 2048;
  int32_t max_num_seqs = 256;
  bool enable_chunked_prefill = true;
  bool enable_prefix_caching = true;
};

struct ScheduledSequence {
  Sequence* seq = nullptr;
  int32_t num_tokens = 0;  // own tokens computed this step
};

struct SchedulerStats {
  int64_t num_preemptions = 0;
  int64_t num_chunked_prefills = 0;  // steps that ran a prompt only in part
  int64_t prefix_cache_queries = 0;  // prompt tokens looked up in the prefix cache
  int64_t prefix_cache_hits = 0;     // of those, tokens found
  int64_t shared_block_waits = 0;    // admissions put off to reuse a block being computed
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, BlockPool& pool);

  void add(Sequence* seq);
  // Removes a sequence wherever it is and returns its blocks. Safe on finished ones.
  void remove(Sequence* seq);
  std::vector<ScheduledSequence> schedule();
  // After a step: publishes newly completed full blocks to the prefix cache.
  void on_computed(Sequence& seq);

  size_t num_waiting() const { return waiting_.size(); }
  size_t num_running() const { return running_.size(); }
  bool empty() const { return waiting_.empty() && running_.empty(); }
  const SchedulerStats& stats() const { return stats_; }
  const SchedulerConfig& config() const { return config_; }

 private:
  void free_blocks(Sequence& seq);
  bool grow_blocks(Sequence& seq, int32_t num_tokens);
  void preempt(Sequence& seq);
  // Reuses cached full blocks for a fresh prompt; returns false (holding nothing) when
  // its next full block is being computed by a running sequence: it waits for it.
  bool match_prefix_cache(Sequence& seq);
  // Announces the full prompt blocks `seq` will compute, for match_prefix_cache.
  void announce_pending(Sequence& seq);
  void forget_pending(Sequence& seq);
  uint64_t hash_seed(const Sequence& seq) const;

  SchedulerConfig config_;
  BlockPool& pool_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;
  std::unordered_map<uint64_t, int64_t> pending_;  // block chain hash -> computing sequence
  SchedulerStats stats_;
};

}  // namespace relayllm
