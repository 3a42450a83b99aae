// Typed access to tokenizer.json fields with errors that name the field.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "relayllm/common/error.h"

namespace relayllm {

template <typename T>
T field(const nlohmann::json& object, const char* key, const std::string& where) {
  if (!object.is_object() || !object.contains(key)) fail("{}: missing field \"{}\"", where, key);
  try {
    return object.at(key).get<T>();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: field \"{}\" has the wrong type ({})", where, key, object.at(key).dump());
  }
}

template <typename T>
T field_or(const nlohmann::json& object, const char* key, T fallback, const std::string& where) {
  if (!object.is_object() || !object.contains(key) || object.at(key).is_null()) return fallback;
  return field<T>(object, key, where);
}

// The member `key` of `object`, or a null value when absent (never copies).
inline const nlohmann::json& child(const nlohmann::json& object, const char* key) {
  static const nlohmann::json kNull;
  if (!object.is_object()) return kNull;
  auto it = object.find(key);
  return it == object.end() ? kNull : *it;
}

inline std::string type_of(const nlohmann::json& object, const std::string& where) {
  return field<std::string>(object, "type", where);
}

}  // namespace relayllm
