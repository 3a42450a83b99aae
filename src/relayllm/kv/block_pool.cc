#include "relayllm/kv/block_pool.h"

#include <xxhash.h>

#include "relayllm/common/error.h"

namespace relayllm {

uint64_t chain_block_hash(uint64_t parent_hash, std::span<const int32_t> tokens) {
  return XXH3_64bits_withSeed(tokens.data(), tokens.size_bytes(), parent_hash);
}

BlockPool::BlockPool(int32_t num_blocks, int32_t block_size)
    : block_size_(block_size),
      ref_counts_(num_blocks, 0),
      prev_(num_blocks, -1),
      next_(num_blocks, -1),
      block_hash_(num_blocks) {
  RELAYLLM_CHECK(num_blocks > 0, "the KV pool needs at least one block, got {}", num_blocks);
  RELAYLLM_CHECK(block_size > 0, "block size must be positive, got {}", block_size);
  for (int32_t b = 0; b < num_blocks; ++b) push_free(b);
}

void BlockPool::push_free(int32_t block) {
  prev_[block] = tail_;
  next_[block] = -1;
  if (tail_ >= 0)
    next_[tail_] = block;
  else
    head_ = block;
  tail_ = block;
  ++num_free_;
}

void BlockPool::unlink_free(int32_t block) {
  if (prev_[block] >= 0)
    next_[prev_[block]] = next_[block];
  else
    head_ = next_[block];
  if (next_[block] >= 0)
    prev_[next_[block]] = prev_[block];
  else
    tail_ = prev_[block];
  prev_[block] = next_[block] = -1;
  --num_free_;
}

std::optional<int32_t> BlockPool::allocate() {
  if (head_ < 0) return std::nullopt;
  int32_t block = head_;
  unlink_free(block);
  if (block_hash_[block]) {
    cached_.erase(*block_hash_[block]);
    block_hash_[block].reset();
  }
  ref_counts_[block] = 1;
  return block;
}

void BlockPool::retain(int32_t block) {
  RELAYLLM_CHECK(ref_counts_.at(block) > 0, "retain of free block {}", block);
  ++ref_counts_[block];
}

void BlockPool::release(int32_t block) {
  RELAYLLM_CHECK(ref_counts_.at(block) > 0, "release of free block {}", block);
  if (--ref_counts_[block] == 0) push_free(block);
}

std::optional<int32_t> BlockPool::take_cached(uint64_t hash) {
  auto it = cached_.find(hash);
  if (it == cached_.end()) return std::nullopt;
  int32_t block = it->second;
  if (ref_counts_[block] == 0) unlink_free(block);
  ++ref_counts_[block];
  return block;
}

void BlockPool::mark_cached(int32_t block, uint64_t hash) {
  if (block_hash_.at(block)) return;  // already published under its hash
  if (cached_.count(hash)) return;    // another block holds the same content; keep that one
  block_hash_[block] = hash;
  cached_[hash] = block;
}

void BlockPool::check_consistency() const {
  int32_t count = 0;
  std::vector<char> on_list(ref_counts_.size(), 0);
  for (int32_t b = head_, last = -1; b >= 0; last = b, b = next_[b]) {
    RELAYLLM_CHECK(prev_[b] == last, "free list broken at block {}", b);
    RELAYLLM_CHECK(!on_list[b], "block {} twice on the free list", b);
    on_list[b] = 1;
    ++count;
  }
  RELAYLLM_CHECK(count == num_free_, "free list holds {} blocks, counter says {}", count,
                 num_free_);
  for (size_t b = 0; b < ref_counts_.size(); ++b) {
    RELAYLLM_CHECK(ref_counts_[b] >= 0, "block {} has negative reference count", b);
    RELAYLLM_CHECK((ref_counts_[b] == 0) == bool(on_list[b]),
                   "block {} has reference count {} but is {}on the free list", b, ref_counts_[b],
                   on_list[b] ? "" : "not ");
    if (block_hash_[b]) {
      auto it = cached_.find(*block_hash_[b]);
      RELAYLLM_CHECK(it != cached_.end() && it->second == int32_t(b), "block {} hash not indexed",
                     b);
    }
  }
  for (const auto& [hash, block] : cached_)
    RELAYLLM_CHECK(block_hash_[block] && *block_hash_[block] == hash,
                   "cache entry for block {} stale", block);
}

}  // namespace relayllm
