#include "relayllm/engine/scheduler.h"

#include <algorithm>

#include "relayllm/common/error.h"
#include "relayllm/kv/relay_prefix_manager.h"

namespace relayllm {

Scheduler::Scheduler(SchedulerConfig config, BlockPool& pool) : config_(config), pool_(pool) {}

void Scheduler::add(Sequence* seq) {
  seq->status = SequenceStatus::kWaiting;
  waiting_.push_back(seq);
}

void Scheduler::free_blocks(Sequence& seq) {
  forget_pending(seq);
  for (int32_t block : seq.blocks) pool_.release(block);
  seq.blocks.clear();
  seq.block_hashes.clear();
  seq.num_computed = 0;
}

void Scheduler::remove(Sequence* seq) {
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), seq), waiting_.end());
  running_.erase(std::remove(running_.begin(), running_.end(), seq), running_.end());
  free_blocks(*seq);
}

bool Scheduler::grow_blocks(Sequence& seq, int32_t num_tokens) {
  int32_t bs = pool_.block_size();
  int32_t needed = (seq.num_computed + num_tokens + bs - 1) / bs - int32_t(seq.blocks.size());
  if (needed <= 0) return true;
  if (pool_.num_free() < needed) return false;
  for (int32_t i = 0; i < needed; ++i) seq.blocks.push_back(*pool_.allocate());
  return true;
}

void Scheduler::preempt(Sequence& seq) {
  running_.erase(std::remove(running_.begin(), running_.end(), &seq), running_.end());
  free_blocks(seq);
  seq.status = SequenceStatus::kWaiting;
  ++seq.num_preemptions;
  ++stats_.num_preemptions;
  waiting_.push_front(&seq);
}

uint64_t Scheduler::hash_seed(const Sequence& seq) const {
  // Own blocks of relay-attached sequences depend on the prefix before them.
  return seq.prefix ? chain_block_hash(0x5eed, seq.prefix->tokens) : 0;
}

bool Scheduler::match_prefix_cache(Sequence& seq) {
  // prompt_logprobs needs logits at every prompt position, so nothing may be skipped.
  if (!config_.enable_prefix_caching || seq.wants_prompt_logprobs()) return true;
  int32_t bs = pool_.block_size();
  // At least one token must be computed to produce the next token's logits.
  int32_t max_blocks = (seq.own_len() - 1) / bs;
  uint64_t hash = hash_seed(seq);
  std::vector<int32_t> tokens(bs);
  for (int32_t b = 0; b < max_blocks; ++b) {
    for (int32_t i = 0; i < bs; ++i) tokens[i] = seq.token_at(seq.prefix_len + b * bs + i);
    hash = chain_block_hash(hash, tokens);
    std::optional<int32_t> block = pool_.take_cached(hash);
    if (!block) {
      if (auto it = pending_.find(hash); it != pending_.end() && it->second != seq.id) {
        // Another running sequence computes this block now: wait for it, holding nothing.
        for (int32_t held : seq.blocks) pool_.release(held);
        seq.blocks.clear();
        seq.block_hashes.clear();
        ++stats_.shared_block_waits;
        return false;
      }
      break;
    }
    seq.blocks.push_back(*block);
    seq.block_hashes.push_back(hash);
  }
  int32_t hit = int32_t(seq.blocks.size()) * bs;
  stats_.prefix_cache_queries += seq.own_len();
  stats_.prefix_cache_hits += hit;
  seq.num_computed = hit;
  seq.num_prefix_cache_hit_tokens = hit;
  return true;
}

void Scheduler::announce_pending(Sequence& seq) {
  if (!config_.enable_prefix_caching) return;
  const int32_t bs = pool_.block_size();
  const int32_t prompt_own = int32_t(seq.prompt_ids.size()) - seq.prefix_len;
  const int32_t first = int32_t(seq.block_hashes.size());
  uint64_t hash = seq.block_hashes.empty() ? hash_seed(seq) : seq.block_hashes.back();
  std::vector<int32_t> tokens(bs);
  for (int32_t b = first; b < prompt_own / bs; ++b) {
    for (int32_t i = 0; i < bs; ++i) tokens[i] = seq.token_at(seq.prefix_len + b * bs + i);
    hash = chain_block_hash(hash, tokens);
    if (pool_.is_cached(hash) || !pending_.emplace(hash, seq.id).second) continue;
    seq.pending_block_hashes.push_back(hash);
  }
}

void Scheduler::forget_pending(Sequence& seq) {
  for (uint64_t hash : seq.pending_block_hashes)
    if (auto it = pending_.find(hash); it != pending_.end() && it->second == seq.id)
      pending_.erase(it);
  seq.pending_block_hashes.clear();
}

void Scheduler::on_computed(Sequence& seq) {
  if (!config_.enable_prefix_caching) return;
  int32_t bs = pool_.block_size();
  int32_t full = std::min<int32_t>(seq.num_computed / bs, int32_t(seq.blocks.size()));
  uint64_t hash = seq.block_hashes.empty() ? hash_seed(seq) : seq.block_hashes.back();
  std::vector<int32_t> tokens(bs);
  for (int32_t b = int32_t(seq.block_hashes.size()); b < full; ++b) {
    for (int32_t i = 0; i < bs; ++i) tokens[i] = seq.token_at(seq.prefix_len + b * bs + i);
    hash = chain_block_hash(hash, tokens);
    pool_.mark_cached(seq.blocks[b], hash);
    seq.block_hashes.push_back(hash);
    if (auto it = pending_.find(hash); it != pending_.end() && it->second == seq.id)
      pending_.erase(it);
  }
  if (!seq.is_prefilling()) forget_pending(seq);
}

std::vector<ScheduledSequence> Scheduler::schedule() {
  std::vector<ScheduledSequence> out;
  int32_t budget = config_.max_num_batched_tokens;
  bool preempted = false;

  // Running sequences first, oldest first; a shortage of blocks preempts the newest.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence& seq = *running_[i];
    int32_t remaining = seq.own_len() - seq.num_computed;
    int32_t n = std::min(remaining, budget);
    if (n <= 0) {
      ++i;
      continue;
    }
    bool preempted_self = false;
    while (!grow_blocks(seq, n)) {
      Sequence& victim = *running_.back();
      preempt(victim);
      preempted = true;
      if (&victim == &seq) {
        preempted_self = true;
        break;
      }
    }
    if (preempted_self) break;
    if (n < remaining && seq.is_prefilling()) ++stats_.num_chunked_prefills;
    out.push_back({&seq, n});
    budget -= n;
    ++i;
  }

  // Then waiting sequences in arrival order (preempted ones were put in front).
  // After a preemption the pool is short: admitting new work would only thrash. A
  // sequence waiting for a shared block another one computes is passed over this step.
  for (size_t w = 0; !preempted && w < waiting_.size() && budget > 0 &&
                     int32_t(running_.size()) < config_.max_num_seqs;) {
    Sequence& seq = *waiting_[w];
    if (seq.blocks.empty() && !match_prefix_cache(seq)) {
      ++w;
      continue;
    }
    int32_t remaining = seq.own_len() - seq.num_computed;
    if (!config_.enable_chunked_prefill && remaining > budget) {
      if (out.empty() && remaining > config_.max_num_batched_tokens)
        fail(
            "request {} needs {} tokens in one step but --max-num-batched-tokens is {} and chunked "
            "prefill is off",
            seq.id, remaining, config_.max_num_batched_tokens);
      free_blocks(seq);
      break;
    }
    int32_t n = std::min(remaining, budget);
    if (!grow_blocks(seq, n)) {
      free_blocks(seq);  // give back cache hits; they stay cached for the next try
      break;
    }
    waiting_.erase(waiting_.begin() + std::ptrdiff_t(w));
    seq.status = SequenceStatus::kRunning;
    if (!seq.first_scheduled_time) seq.first_scheduled_time = Clock::now();
    running_.push_back(&seq);
    announce_pending(seq);
    if (n < remaining) ++stats_.num_chunked_prefills;
    out.push_back({&seq, n});
    budget -= n;
  }
  return out;
}

}  // namespace relayllm
