// Relay prefixes: shared token prefixes whose KV is computed once (positions
// 0..S-1), stored once in the paged pool, and read once per step for every
// request attached to them. Blocks of a prefix stay pinned while it is
// registered or while any request still uses it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace relayllm {

struct RelayPrefix {
  int32_t id = 0;
  std::string name;
  std::vector<int32_t> tokens;
  std::vector<int32_t> blocks;  // hold tokens.size() tokens
  bool ready = false;           // KV computed
  bool removing = false;        // no new requests attach; freed once users reach 0
  int32_t users = 0;            // attached live requests
};

class RelayPrefixRegistry {
 public:
  // Returns the new prefix; its KV is not computed yet (ready == false).
  // Names are unique; registering an existing name is an Error.
  RelayPrefix& add(const std::string& name, std::vector<int32_t> tokens);
  RelayPrefix* find(const std::string& name);
  RelayPrefix* get(int32_t id);
  // The longest ready, non-removing prefix that is a strict token prefix of `prompt`
  // (at least one token must remain for the request itself).
  RelayPrefix* longest_match(std::span<const int32_t> prompt);
  // Drops the entry; the caller has released its blocks.
  void erase(int32_t id);
  std::vector<const RelayPrefix*> all() const;
  size_t size() const { return prefixes_.size(); }

 private:
  int32_t next_id_ = 0;
  std::map<int32_t, std::unique_ptr<RelayPrefix>> prefixes_;
};

}  // namespace relayllm
