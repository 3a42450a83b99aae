// Typed reads of JSON fields, the one helper every JSON reader uses: model folders
// (config.json, generation_config.json, safetensors headers), tokenizer.json, and
// API request bodies and sampling parameters. Absent and null both mean "not given".
// Every failure is one Error line naming where the value came from (a file, or
// nothing for a request body), the field and what it held:
//   "config.json: field 'num_hidden_layers' must be an integer, got string \"32\""
//   "field 'top_p' must be a number, got string \"0.9\""
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "relayllm/common/error.h"

namespace relayllm::json_fields {

// Parses a whole file; the error names the file.
nlohmann::json read_json_file(const std::filesystem::path& path);

// The value of `key`, or nullptr when it is absent or null.
const nlohmann::json* find(const nlohmann::json& object, std::string_view key);

// "source: field 'key'", or "field 'key'" for an empty source (a request body).
std::string describe(std::string_view source, std::string_view key);
// What a wrong value was, for the end of a message: its type and (shortened) text.
std::string describe_value(const nlohmann::json& value);

// Reads of a single value; `key` names it in errors (e.g. "stop[1]").
bool to_bool(const nlohmann::json& value, std::string_view key, std::string_view source = {});
// An integer; unsigned values beyond int64 are out of range.
int64_t to_int(const nlohmann::json& value, std::string_view key, std::string_view source = {});
int32_t to_int32(const nlohmann::json& value, std::string_view key, std::string_view source = {});
// An integer, or a float with an integral value (exporters write 8192.0).
int64_t to_integral(const nlohmann::json& value, std::string_view key,
                    std::string_view source = {});
double to_double(const nlohmann::json& value, std::string_view key, std::string_view source = {});
// A number that fits a float (a finite double beyond it would silently become inf).
float to_float(const nlohmann::json& value, std::string_view key, std::string_view source = {});
std::string to_string(const nlohmann::json& value, std::string_view key,
                      std::string_view source = {});
// A non-negative int32 token id.
int32_t to_token_id(const nlohmann::json& value, std::string_view key,
                    std::string_view source = {});

// Optional fields of an object: nullopt when absent or null.
std::optional<bool> get_bool(const nlohmann::json& object, std::string_view key,
                             std::string_view source = {});
std::optional<int64_t> get_int(const nlohmann::json& object, std::string_view key,
                               std::string_view source = {});
std::optional<int64_t> get_integral(const nlohmann::json& object, std::string_view key,
                                    std::string_view source = {});
std::optional<double> get_double(const nlohmann::json& object, std::string_view key,
                                 std::string_view source = {});
std::optional<std::string> get_string(const nlohmann::json& object, std::string_view key,
                                      std::string_view source = {});
// A token id or a list of them (eos_token_id is an int in most configs and a list in Llama 3's).
std::optional<std::vector<int32_t>> get_token_ids(const nlohmann::json& object,
                                                  std::string_view key,
                                                  std::string_view source = {});
// Like get_integral, but a missing field is an Error.
int64_t require_integral(const nlohmann::json& object, std::string_view key,
                         std::string_view source = {});

// An integer of type T, refused (never truncated) when it does not fit: nlohmann's get<int32_t>
// would silently wrap an id above 2^31 to a different token.
template <typename T>
T checked_integer(const nlohmann::json& value, const std::string& what, const std::string& where) {
  if (!value.is_number_integer())
    fail("{}: {} must be an integer, got {}", where, what, describe_value(value));
  const bool fits = value.is_number_unsigned()
                        ? value.get<uint64_t>() <= uint64_t(std::numeric_limits<T>::max())
                        : value.get<int64_t>() >= int64_t(std::numeric_limits<T>::min()) &&
                              (std::is_unsigned_v<T> ||
                               value.get<int64_t>() <= int64_t(std::numeric_limits<T>::max()));
  if (!fits) fail("{}: {} = {} does not fit in {} bits", where, what, value.dump(), 8 * sizeof(T));
  return value.get<T>();
}

template <typename T>
struct IsIntegerVector : std::false_type {};
template <typename T>
struct IsIntegerVector<std::vector<T>> : std::bool_constant<std::is_integral_v<T>> {};

// Required typed members for nested structures (tokenizer.json): "where: missing field
// \"key\"" or "where: field \"key\" has the wrong type (value)"; integers (and lists of
// them) are range-checked against T.
template <typename T>
T field(const nlohmann::json& object, const char* key, const std::string& where) {
  if (!object.is_object() || !object.contains(key)) fail("{}: missing field \"{}\"", where, key);
  const nlohmann::json& value = object.at(key);
  const std::string what = fmt::format("field \"{}\"", key);
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    return checked_integer<T>(value, what, where);
  } else if constexpr (IsIntegerVector<T>::value) {
    if (!value.is_array())
      fail("{}: {} must be a list of integers, got {}", where, what, describe_value(value));
    T out;
    for (const nlohmann::json& item : value)
      out.push_back(checked_integer<typename T::value_type>(item, what, where));
    return out;
  } else {
    try {
      return value.get<T>();
    } catch (const nlohmann::json::exception&) {
      fail("{}: field \"{}\" has the wrong type ({})", where, key, describe_value(value));
    }
  }
}

template <typename T>
T field_or(const nlohmann::json& object, const char* key, T fallback, const std::string& where) {
  if (!object.is_object() || !object.contains(key) || object.at(key).is_null()) return fallback;
  return field<T>(object, key, where);
}

// The member `key` of `object`, or a null value when absent (never copies).
const nlohmann::json& child(const nlohmann::json& object, const char* key);

}  // namespace relayllm::json_fields
