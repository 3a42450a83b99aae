// The parts of a tokenizer.json "Sequence" component (normalizer, pre_tokenizer, decoder):
// shared by the three builders, which differ only in the part type and the list's key.
#pragma once

#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "relayllm/common/error.h"
#include "relayllm/common/json_fields.h"
#include "relayllm/tokenizer/tokenizer_limits.h"

namespace relayllm {

// config[key] (an array), each element built by make(element, "where.key[i]", depth + 1);
// null parts (components that change nothing) are left out. `here` names the Sequence in
// errors; `depth` is the Sequence's own nesting depth.
template <typename Part, typename Make>
std::vector<std::unique_ptr<Part>> sequence_parts(const nlohmann::json& config, const char* key,
                                                  const std::string& where, const std::string& here,
                                                  int depth, Make&& make) {
  check_sequence_nesting(depth, here);
  std::vector<std::unique_ptr<Part>> parts;
  const auto& list = json_fields::child(config, key);
  if (!list.is_array()) fail("{}: field \"{}\" must be an array", here, key);
  for (size_t i = 0; i < list.size(); ++i) {
    auto part = make(list[i], fmt::format("{}.{}[{}]", where, key, i), depth + 1);
    if (part) parts.push_back(std::move(part));
  }
  return parts;
}

}  // namespace relayllm
