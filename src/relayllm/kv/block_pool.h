// The paged KV pool's bookkeeping: which blocks are in use (reference counted),
// and which freed blocks still hold a full block of cached tokens that a later
// request with the same token history may reuse (automatic prefix caching).
//
// Free blocks form an LRU list: a released block goes to the back, allocation
// takes from the front, so the cached blocks evicted first are the ones
// unused longest.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "relayllm/common/error.h"

namespace relayllm {

// The KV pool cannot take this request or prefix now (blocks pinned by relay prefixes,
// or the prefix limit reached): a server answers it with a "try later" status, not 400.
class KvCapacityError : public Error {
 public:
  using Error::Error;
};

// Hash of a full block given its parent's hash: equal values mean equal token
// history from position 0 (up to 64-bit collisions).
uint64_t chain_block_hash(uint64_t parent_hash, std::span<const int32_t> tokens);

class BlockPool {
 public:
  BlockPool(int32_t num_blocks, int32_t block_size);

  int32_t num_blocks() const { return int32_t(ref_counts_.size()); }
  int32_t block_size() const { return block_size_; }
  // Blocks with no holder, cached or not: what allocate() can still hand out.
  int32_t num_free() const { return num_free_; }
  int32_t ref_count(int32_t block) const { return ref_counts_.at(block); }

  // Takes the least recently freed block (dropping its cached content), held once.
  std::optional<int32_t> allocate();
  void retain(int32_t block);
  void release(int32_t block);

  // Prefix caching. A cached block is found by its chain hash; taking it holds it
  // once more (and removes it from the free list when nobody held it).
  std::optional<int32_t> take_cached(uint64_t hash);
  bool is_cached(uint64_t hash) const { return cached_.count(hash) != 0; }
  // Records that `block` now holds the full block whose chain hash is `hash`.
  void mark_cached(int32_t block, uint64_t hash);
  int32_t num_cached() const { return int32_t(cached_.size()); }

  // Checks every internal invariant (free list vs reference counts, cache maps);
  // throws Error on the first violation. For tests.
  void check_consistency() const;

 private:
  void push_free(int32_t block);
  void unlink_free(int32_t block);

  int32_t block_size_;
  std::vector<int32_t> ref_counts_;
  std::vector<int32_t> prev_, next_;  // doubly linked free list; -1 ends
  int32_t head_ = -1, tail_ = -1;
  int32_t num_free_ = 0;
  std::vector<std::optional<uint64_t>> block_hash_;
  std::unordered_map<uint64_t, int32_t> cached_;
};

}  // namespace relayllm
