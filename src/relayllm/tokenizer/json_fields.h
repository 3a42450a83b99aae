// Typed access to tokenizer.json fields with errors that name the field.
#pragma once

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <vector>

#include "relayllm/common/error.h"

namespace relayllm {

// Token ids above this are refused: no vocabulary comes near 16M entries, and the bound keeps
// vocab_size (max id + 1) and every id table far from int32 overflow and huge allocations.
constexpr int64_t kMaxTokenId = (int64_t(1) << 24) - 1;

// Sequence components (normalizer, pre_tokenizer, decoder, post_processor) are built
// recursively; real files nest them one or two levels, a hostile one thousands.
constexpr int kMaxSequenceNesting = 16;

inline void check_sequence_nesting(int depth, const std::string& where) {
  if (depth > kMaxSequenceNesting)
    fail("{}: Sequence nested deeper than {} levels", where, kMaxSequenceNesting);
}

// An integer of type T, refused (never truncated) when it does not fit: nlohmann's get<int32_t>
// would silently wrap an id above 2^31 to a different token.
template <typename T>
T checked_integer(const nlohmann::json& value, const std::string& what, const std::string& where) {
  if (!value.is_number_integer()) fail("{}: {} must be an integer, got {}", where, what, value.dump());
  const bool fits = value.is_number_unsigned()
                        ? value.get<uint64_t>() <= uint64_t(std::numeric_limits<T>::max())
                        : value.get<int64_t>() >= int64_t(std::numeric_limits<T>::min()) &&
                              (std::is_unsigned_v<T> ||
                               value.get<int64_t>() <= int64_t(std::numeric_limits<T>::max()));
  if (!fits)
    fail("{}: {} = {} does not fit in {} bits", where, what, value.dump(), 8 * sizeof(T));
  return value.get<T>();
}

template <typename T>
struct IsIntegerVector : std::false_type {};
template <typename T>
struct IsIntegerVector<std::vector<T>> : std::bool_constant<std::is_integral_v<T>> {};

template <typename T>
T field(const nlohmann::json& object, const char* key, const std::string& where) {
  if (!object.is_object() || !object.contains(key)) fail("{}: missing field \"{}\"", where, key);
  const nlohmann::json& value = object.at(key);
  const std::string what = fmt::format("field \"{}\"", key);
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    return checked_integer<T>(value, what, where);
  } else if constexpr (IsIntegerVector<T>::value) {
    if (!value.is_array()) fail("{}: {} must be a list of integers, got {}", where, what, value.dump());
    T out;
    for (const nlohmann::json& item : value)
      out.push_back(checked_integer<typename T::value_type>(item, what, where));
    return out;
  } else {
    try {
      return value.get<T>();
    } catch (const nlohmann::json::exception& e) {
      fail("{}: field \"{}\" has the wrong type ({})", where, key, value.dump());
    }
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
