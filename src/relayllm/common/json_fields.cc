#include "relayllm/common/json_fields.h"

#include <cmath>
#include <limits>

#include "relayllm/common/bounded_json.h"

namespace relayllm::json_fields {

nlohmann::json read_json_file(const std::filesystem::path& path) {
  return read_bounded_json_file(path.string());
}

const nlohmann::json* find(const nlohmann::json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

std::string describe(std::string_view source, std::string_view key) {
  if (source.empty()) return fmt::format("field '{}'", key);
  return fmt::format("{}: field '{}'", source, key);
}

std::string describe_value(const nlohmann::json& value) {
  // A request may send megabytes where a number belongs: the message keeps a short head.
  constexpr size_t kMaxText = 40;
  std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() > kMaxText) text = text.substr(0, kMaxText) + "...";
  return fmt::format("{} {}", value.type_name(), text);
}

bool to_bool(const nlohmann::json& value, std::string_view key, std::string_view source) {
  if (!value.is_boolean())
    fail("{} must be a boolean, got {}", describe(source, key), describe_value(value));
  return value.get<bool>();
}

int64_t to_int(const nlohmann::json& value, std::string_view key, std::string_view source) {
  if (!value.is_number_integer())
    fail("{} must be an integer, got {}", describe(source, key), describe_value(value));
  if (value.is_number_unsigned()) {
    uint64_t u = value.get<uint64_t>();
    if (u > uint64_t(std::numeric_limits<int64_t>::max()))
      fail("{} is out of range, got {}", describe(source, key), u);
    return int64_t(u);
  }
  return value.get<int64_t>();
}

int32_t to_int32(const nlohmann::json& value, std::string_view key, std::string_view source) {
  int64_t x = to_int(value, key, source);
  if (x < std::numeric_limits<int32_t>::min() || x > std::numeric_limits<int32_t>::max())
    fail("{} is out of range, got {}", describe(source, key), x);
  return int32_t(x);
}

int64_t to_integral(const nlohmann::json& value, std::string_view key, std::string_view source) {
  if (value.is_number_float()) {
    double d = value.get<double>();
    if (std::floor(d) == d && std::fabs(d) < 9.0e15) return int64_t(d);
  }
  return to_int(value, key, source);
}

double to_double(const nlohmann::json& value, std::string_view key, std::string_view source) {
  if (!value.is_number())
    fail("{} must be a number, got {}", describe(source, key), describe_value(value));
  return value.get<double>();
}

float to_float(const nlohmann::json& value, std::string_view key, std::string_view source) {
  double d = to_double(value, key, source);
  if (std::isfinite(d) && std::fabs(d) > double(std::numeric_limits<float>::max()))
    fail("{} is out of range, got {}", describe(source, key), d);
  return float(d);
}

std::string to_string(const nlohmann::json& value, std::string_view key, std::string_view source) {
  if (!value.is_string())
    fail("{} must be a string, got {}", describe(source, key), describe_value(value));
  return value.get<std::string>();
}

int32_t to_token_id(const nlohmann::json& value, std::string_view key, std::string_view source) {
  if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
      value.get<int64_t>() > std::numeric_limits<int32_t>::max())
    fail("{} must hold non-negative token ids, got {}", describe(source, key),
         describe_value(value));
  return int32_t(value.get<int64_t>());
}

std::optional<bool> get_bool(const nlohmann::json& object, std::string_view key,
                             std::string_view source) {
  const nlohmann::json* value = find(object, key);
  if (!value) return std::nullopt;
  return to_bool(*value, key, source);
}

std::optional<int64_t> get_int(const nlohmann::json& object, std::string_view key,
                               std::string_view source) {
  const nlohmann::json* value = find(object, key);
  if (!value) return std::nullopt;
  return to_int(*value, key, source);
}

std::optional<int64_t> get_integral(const nlohmann::json& object, std::string_view key,
                                    std::string_view source) {
  const nlohmann::json* value = find(object, key);
  if (!value) return std::nullopt;
  return to_integral(*value, key, source);
}

std::optional<double> get_double(const nlohmann::json& object, std::string_view key,
                                 std::string_view source) {
  const nlohmann::json* value = find(object, key);
  if (!value) return std::nullopt;
  return to_double(*value, key, source);
}

std::optional<std::string> get_string(const nlohmann::json& object, std::string_view key,
                                      std::string_view source) {
  const nlohmann::json* value = find(object, key);
  if (!value) return std::nullopt;
  return to_string(*value, key, source);
}

std::optional<std::vector<int32_t>> get_token_ids(const nlohmann::json& object,
                                                  std::string_view key, std::string_view source) {
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

int64_t require_integral(const nlohmann::json& object, std::string_view key,
                         std::string_view source) {
  std::optional<int64_t> value = get_integral(object, key, source);
  if (!value) fail("{}: missing field {}", source, key);
  return *value;
}

const nlohmann::json& child(const nlohmann::json& object, const char* key) {
  static const nlohmann::json kNull;
  if (!object.is_object()) return kNull;
  auto it = object.find(key);
  return it == object.end() ? kNull : *it;
}

}  // namespace relayllm::json_fields
