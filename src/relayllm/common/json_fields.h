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
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
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

// Required typed members for nested structures (tokenizer.json): "where: missing field
// \"key\"" or "where: field \"key\" has the wrong type (value)".
template <typename T>
T field(const nlohmann::json& object, const char* key, const std::string& where) {
  if (!object.is_object() || !object.contains(key)) fail("{}: missing field \"{}\"", where, key);
  try {
    return object.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    fail("{}: field \"{}\" has the wrong type ({})", where, key, describe_value(object.at(key)));
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
