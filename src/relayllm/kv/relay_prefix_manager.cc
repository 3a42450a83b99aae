#include "relayllm/kv/relay_prefix_manager.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "relayllm/common/error.h"

namespace relayllm {

RelayPrefixManager::RelayPrefixManager(BlockPool& pool, CheckTokens check_tokens,
                                       ComputeKv compute_kv)
    : pool_(pool), check_tokens_(std::move(check_tokens)), compute_kv_(std::move(compute_kv)) {}

const RelayPrefix& RelayPrefixManager::add(const std::string& name, std::vector<int32_t> tokens,
                                           bool automatic) {
  check_tokens_(name, tokens);
  const int32_t bs = pool_.block_size();
  const int32_t needed = (int32_t(tokens.size()) + bs - 1) / bs;
  if (num_pinned_blocks() + needed > max_pinned_blocks())
    throw KvCapacityError(fmt::format(
        "relay prefix '{}' needs {} KV blocks, but relay prefixes already pin {} of the {} they "
        "may pin ({:g} of the pool's {}, --max-relay-prefix-kv-fraction); remove one first",
        name, needed, num_pinned_blocks(), max_pinned_blocks(), max_pinned_fraction_,
        pool_.num_blocks()));
  if (pool_.num_free() < needed)
    throw KvCapacityError(fmt::format("relay prefix '{}' needs {} KV blocks but only {} are free",
                                      name, needed, pool_.num_free()));
  RELAYLLM_CHECK(!tokens.empty(), "relay prefix '{}' is empty", name);
  RELAYLLM_CHECK(find(name) == nullptr, "a relay prefix named '{}' already exists", name);
  auto owned = std::make_unique<RelayPrefix>();
  RelayPrefix& prefix = *owned;
  prefix.id = next_id_++;
  prefix.name = name;
  prefix.tokens = std::move(tokens);
  prefix.automatic = automatic;
  prefix.last_use = automatic ? ++tick_ : 0;
  for (int32_t i = 0; i < needed; ++i) prefix.blocks.push_back(*pool_.allocate());
  prefixes_[prefix.id] = std::move(owned);
  try {
    compute_kv_(prefix);
  } catch (...) {
    free_prefix(prefix);
    throw;
  }
  prefix.ready = true;
  spdlog::info("relay prefix '{}': {} tokens in {} blocks", prefix.name, prefix.tokens.size(),
               prefix.blocks.size());
  return prefix;
}

int32_t RelayPrefixManager::num_pinned_blocks() const {
  int32_t n = 0;
  for (const auto& [id, p] : prefixes_) n += int32_t(p->blocks.size());
  return n;
}

int32_t RelayPrefixManager::max_pinned_blocks() const {
  return int32_t(std::clamp(max_pinned_fraction_, 0.0, 1.0) * pool_.num_blocks());
}

PrefixRefusal RelayPrefixManager::check_named(const std::string& name) const {
  int32_t named = 0;
  for (const auto& [id, p] : prefixes_) {
    if (p->name == name) return PrefixRefusal::kExists;
    if (!p->automatic) ++named;
  }
  return named >= limits_.max_named ? PrefixRefusal::kQuotaFull : PrefixRefusal::kNone;
}

void RelayPrefixManager::remove(const std::string& name) {
  RelayPrefix* prefix = find(name);
  RELAYLLM_CHECK(prefix != nullptr, "no relay prefix named '{}'", name);
  prefix->removing = true;
  if (prefix->users == 0) free_prefix(*prefix);
}

RelayPrefix* RelayPrefixManager::find(const std::string& name) {
  for (auto& [id, prefix] : prefixes_)
    if (prefix->name == name && !prefix->removing) return prefix.get();
  return nullptr;
}

RelayPrefix* RelayPrefixManager::find_any(const std::string& name) {
  for (auto& [id, prefix] : prefixes_)
    if (prefix->name == name) return prefix.get();
  return nullptr;
}

RelayPrefix* RelayPrefixManager::longest_match(std::span<const int32_t> prompt) {
  RelayPrefix* best = nullptr;
  for (auto& [id, prefix] : prefixes_) {
    const auto& t = prefix->tokens;
    if (!prefix->ready || prefix->removing || t.size() >= prompt.size()) continue;
    if (best && best->tokens.size() >= t.size()) continue;
    if (std::equal(t.begin(), t.end(), prompt.begin())) best = prefix.get();
  }
  return best;
}

std::vector<const RelayPrefix*> RelayPrefixManager::all() const {
  std::vector<const RelayPrefix*> out;
  for (const auto& [id, prefix] : prefixes_) out.push_back(prefix.get());
  return out;
}

void RelayPrefixManager::attach(RelayPrefix& prefix) {
  ++prefix.users;
  if (prefix.automatic) prefix.last_use = ++tick_;
}

void RelayPrefixManager::release(RelayPrefix& prefix) {
  RELAYLLM_CHECK(prefix.users > 0, "relay prefix '{}' released more often than attached",
                 prefix.name);
  if (--prefix.users == 0 && prefix.removing) free_prefix(prefix);
}

void RelayPrefixManager::free_prefix(RelayPrefix& prefix) {
  for (int32_t b : prefix.blocks) pool_.release(b);
  prefixes_.erase(prefix.id);
}

std::string RelayPrefixManager::automatic_name(std::span<const int32_t> tokens) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the ids' little-endian bytes
  for (int32_t id : tokens)
    for (int b = 0; b < 4; ++b) {
      h ^= (uint32_t(id) >> (8 * b)) & 0xff;
      h *= 1099511628211ull;
    }
  return fmt::format("chat-system-{:016x}", h);
}

void RelayPrefixManager::use_automatic(std::span<const int32_t> tokens) {
  const int32_t bs = pool_.block_size();
  if (int32_t(tokens.size()) < limits_.min_auto_blocks * bs) return;
  const std::string name = automatic_name(tokens);
  if (RelayPrefix* live = find_any(name)) {  // live, or still draining while being removed
    if (live->automatic) live->last_use = ++tick_;
    return;
  }
  int32_t automatic = 0;
  RelayPrefix* victim = nullptr;
  for (auto& [id, p] : prefixes_) {
    if (!p->automatic) continue;
    ++automatic;
    if (p->users == 0 && !p->removing && (!victim || p->last_use < victim->last_use))
      victim = p.get();
  }
  if (automatic >= limits_.max_auto) {
    if (!victim) return;
    remove(victim->name);
  }
  // Never let a prefix take more than half of the free pool from requests.
  const int32_t needed = (int32_t(tokens.size()) + bs - 1) / bs;
  if (needed > pool_.num_free() / 2) return;
  try {
    add(name, std::vector<int32_t>(tokens.begin(), tokens.end()), true);
  } catch (const Error& e) {
    spdlog::warn("chat system prefix {} not registered: {}", name, e.what());
  }
}

}  // namespace relayllm
