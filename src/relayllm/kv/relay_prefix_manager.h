// Relay prefixes: shared token prefixes whose KV is computed once (positions
// 0..S-1), stored once in the paged pool, and read once per step for every
// request attached to them. The manager is the one owner of their life:
// registering (named, or automatic for a chat system part), attaching requests,
// releasing them, removing while in use (the blocks stay pinned until the last
// user is released), the quota of named prefixes and the LRU eviction of
// automatic ones. Nobody else counts users. Single-threaded, like the Engine.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "relayllm/kv/block_pool.h"

namespace relayllm {

struct RelayPrefix {
  int32_t id = 0;
  std::string name;
  std::vector<int32_t> tokens;
  std::vector<int32_t> blocks;  // hold tokens.size() tokens
  bool ready = false;           // KV computed
  bool removing = false;        // no new requests attach; freed once users reach 0
  int32_t users = 0;            // attached live requests
  bool automatic = false;       // registered for a chat system part, evicted when unused
  uint64_t last_use = 0;        // automatic ones: tick of the latest request that used it
};

struct RelayPrefixLimits {
  int32_t max_named = 64;  // named prefixes registered through the API
  int32_t max_auto = 8;    // automatic prefixes; the LRU one without users makes room
  // Automatic prefixes shorter than this many KV blocks are not worth registering.
  int32_t min_auto_blocks = 2;
};

// Why a named registration is refused before any work (the server answers 409 / 429).
enum class PrefixRefusal { kNone, kExists, kQuotaFull };

class RelayPrefixManager {
 public:
  // What the engine provides: a check of a new prefix's tokens (length, vocabulary)
  // that throws Error, and the computation of its KV into its blocks.
  using CheckTokens = std::function<void(const std::string& name, std::span<const int32_t> tokens)>;
  using ComputeKv = std::function<void(const RelayPrefix&)>;

  RelayPrefixManager(BlockPool& pool, CheckTokens check_tokens, ComputeKv compute_kv);

  void set_limits(const RelayPrefixLimits& limits) { limits_ = limits; }
  const RelayPrefixLimits& limits() const { return limits_; }
  // Prefixes together may pin at most this share of the pool (the rest stays for requests).
  void set_max_pinned_fraction(double fraction) { max_pinned_fraction_ = fraction; }
  // KV blocks held by prefixes (also those being removed), and the most they may hold.
  int32_t num_pinned_blocks() const;
  int32_t max_pinned_blocks() const;

  // Takes blocks, computes the KV now and returns the ready prefix. Names are unique;
  // Error when the name exists or the tokens are empty, KvCapacityError when the pool
  // cannot hold it or it would take prefixes past their share of the pool.
  const RelayPrefix& add(const std::string& name, std::vector<int32_t> tokens,
                         bool automatic = false);
  // Whether a named prefix may be added now (exists already, quota of named ones full).
  PrefixRefusal check_named(const std::string& name) const;
  // Stops new requests from attaching; frees the prefix now or once its last user is
  // released. Error when no prefix (not already being removed) has that name.
  void remove(const std::string& name);

  // A prefix by name, skipping those being removed; nullptr when none.
  RelayPrefix* find(const std::string& name);
  // The longest ready, non-removing prefix that is a strict token prefix of `prompt`
  // (at least one token must remain for the request itself).
  RelayPrefix* longest_match(std::span<const int32_t> prompt);
  std::vector<const RelayPrefix*> all() const;
  size_t size() const { return prefixes_.size(); }

  // A request starts or stops using `prefix`; release frees a prefix being removed
  // once its last user is gone.
  void attach(RelayPrefix& prefix);
  void release(RelayPrefix& prefix);

  // A chat request whose system part is `tokens`: registers it as an automatic prefix
  // when it is long enough and not live yet (evicting the least recently used unused
  // automatic one when max_auto are registered, never taking more than half of the free
  // pool), or marks the live one as just used. Never throws: a prefix that cannot be
  // registered leaves the request without one.
  void use_automatic(std::span<const int32_t> tokens);
  // The name an automatic prefix of these tokens gets: "chat-system-" and a hash.
  static std::string automatic_name(std::span<const int32_t> tokens);

 private:
  void free_prefix(RelayPrefix& prefix);
  RelayPrefix* find_any(const std::string& name);  // including those being removed

  BlockPool& pool_;
  CheckTokens check_tokens_;
  ComputeKv compute_kv_;
  RelayPrefixLimits limits_;
  double max_pinned_fraction_ = 1.0;
  int32_t next_id_ = 0;
  uint64_t tick_ = 0;
  std::map<int32_t, std::unique_ptr<RelayPrefix>> prefixes_;
};

}  // namespace relayllm
