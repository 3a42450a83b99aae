// Typed reads of optional JSON fields for the model-folder parsers. Every failure
// names the source file and the field, so a bad config reaches the user as one line.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "relayllm/common/bounded_json.h"
#include "relayllm/common/error.h"

namespace relayllm::json_fields {

inline nlohmann::json read_json_file(const std::filesystem::path& path) {
  return read_bounded_json_file(path.string());
}

// Absent and null both mean "not given", as in HF configs.
inline const nlohmann::json* find(const nlohmann::json& object, const std::string& key) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

inline std::optional<int64_t> get_int(const nlohmann::json& object, const std::string& key,
                                      const std::string& source) {
  const nlohmann::json* value = find(object, key);
  if (!value) return std::nullopt;
  if (value->is_number_unsigned() && value->get<uint64_t>() > uint64_t(INT64_MAX))
    fail("{}: field {} = {} is out of range", source, key, value->dump());
  if (value->is_number_integer()) return value->get<int64_t>();
  // Some exporters write integral values as floats (e.g. 8192.0).
  if (value->is_number_float()) {
    double d = value->get<double>();
    if (std::floor(d) == d && std::fabs(d) < 9.0e15) return int64_t(d);
  }
  fail("{}: field {} must be an integer, got {}", source, key, value->dump());
}

inline int64_t require_int(const nlohmann::json& object, const std::string& key,
                           const std::string& source) {
  std::optional<int64_t> value = get_int(object, key, source);
  if (!value) fail("{}: missing field {}", source, key);
  return *value;
}

inline std::optional<double> get_double(const nlohmann::json& object, const std::string& key,
                                        const std::string& source) {
  const nlohmann::json* value = find(object, key);
  if (!value) return std::nullopt;
  if (!value->is_number())
    fail("{}: field {} must be a number, got {}", source, key, value->dump());
  return value->get<double>();
}

inline std::optional<bool> get_bool(const nlohmann::json& object, const std::string& key,
                                    const std::string& source) {
  const nlohmann::json* value = find(object, key);
  if (!value) return std::nullopt;
  if (!value->is_boolean())
    fail("{}: field {} must be true or false, got {}", source, key, value->dump());
  return value->get<bool>();
}

inline std::optional<std::string> get_string(const nlohmann::json& object, const std::string& key,
                                             const std::string& source) {
  const nlohmann::json* value = find(object, key);
  if (!value) return std::nullopt;
  if (!value->is_string())
    fail("{}: field {} must be a string, got {}", source, key, value->dump());
  return value->get<std::string>();
}

inline int32_t to_token_id(const nlohmann::json& value, const std::string& key,
                           const std::string& source) {
  if (!value.is_number_integer() || (!value.is_number_unsigned() && value.get<int64_t>() < 0) ||
      (value.is_number_unsigned() && value.get<uint64_t>() > uint64_t(INT32_MAX)) ||
      value.get<int64_t>() > std::numeric_limits<int32_t>::max())
    fail("{}: field {} must hold non-negative token ids, got {}", source, key, value.dump());
  return int32_t(value.get<int64_t>());
}

// eos_token_id is an int in most configs and a list in Llama 3's.
inline std::optional<std::vector<int32_t>> get_token_ids(const nlohmann::json& object,
                                                         const std::string& key,
                                                         const std::string& source) {
  const nlohmann::json* value = find(object, key);
  if (!value) return std::nullopt;
  std::vector<int32_t> ids;
  if (value->is_array()) {
    for (const nlohmann::json& item : *value) ids.push_back(to_token_id(item, key, source));
  } else {
    ids.push_back(to_token_id(*value, key, source));
  }
  return ids;
}

}  // namespace relayllm::json_fields
