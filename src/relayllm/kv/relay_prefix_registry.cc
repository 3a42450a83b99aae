#include "relayllm/kv/relay_prefix_registry.h"

#include <algorithm>

#include "relayllm/common/error.h"

namespace relayllm {

RelayPrefix& RelayPrefixRegistry::add(const std::string& name, std::vector<int32_t> tokens) {
  RELAYLLM_CHECK(!tokens.empty(), "relay prefix '{}' is empty", name);
  RELAYLLM_CHECK(find(name) == nullptr, "a relay prefix named '{}' already exists", name);
  auto prefix = std::make_unique<RelayPrefix>();
  prefix->id = next_id_++;
  prefix->name = name;
  prefix->tokens = std::move(tokens);
  RelayPrefix& ref = *prefix;
  prefixes_[ref.id] = std::move(prefix);
  return ref;
}

RelayPrefix* RelayPrefixRegistry::find(const std::string& name) {
  for (auto& [id, prefix] : prefixes_)
    if (prefix->name == name && !prefix->removing) return prefix.get();
  return nullptr;
}

RelayPrefix* RelayPrefixRegistry::get(int32_t id) {
  auto it = prefixes_.find(id);
  return it == prefixes_.end() ? nullptr : it->second.get();
}

RelayPrefix* RelayPrefixRegistry::longest_match(std::span<const int32_t> prompt) {
  RelayPrefix* best = nullptr;
  for (auto& [id, prefix] : prefixes_) {
    const auto& t = prefix->tokens;
    if (!prefix->ready || prefix->removing || t.size() >= prompt.size()) continue;
    if (best && best->tokens.size() >= t.size()) continue;
    if (std::equal(t.begin(), t.end(), prompt.begin())) best = prefix.get();
  }
  return best;
}

void RelayPrefixRegistry::erase(int32_t id) { prefixes_.erase(id); }

std::vector<const RelayPrefix*> RelayPrefixRegistry::all() const {
  std::vector<const RelayPrefix*> out;
  for (const auto& [id, prefix] : prefixes_) out.push_back(prefix.get());
  return out;
}

}  // namespace relayllm
