#include "relayllm/structured/schema_keywords.h"

#include <fmt/format.h>

#include <array>
#include <string_view>

#include "relayllm/structured/constraint_spec.h"

namespace relayllm::structured {
namespace {

constexpr std::array<std::string_view, 12> kNotEnforced = {
    "not",        "if",       "then",        "else",        "dependentRequired", "dependentSchemas",
    "multipleOf", "contains", "minContains", "maxContains", "patternProperties", "propertyNames"};

// Keywords whose value is one subschema, a list of subschemas, or a map of names to
// subschemas. Every other keyword's value is not read as a schema.
constexpr std::array<std::string_view, 5> kOneSchema = {"items", "additionalProperties",
                                                        "unevaluatedProperties", "unevaluatedItems",
                                                        "additionalItems"};
constexpr std::array<std::string_view, 4> kSchemaList = {"anyOf", "oneOf", "allOf", "prefixItems"};
constexpr std::array<std::string_view, 3> kSchemaMap = {"properties", "$defs", "definitions"};

template <size_t N>
bool one_of(const std::string& key, const std::array<std::string_view, N>& set) {
  for (std::string_view k : set)
    if (key == k) return true;
  return false;
}

// A JSON pointer token: "~" and "/" escaped (RFC 6901).
std::string pointer_token(const std::string& name) {
  std::string out;
  for (char c : name) {
    if (c == '~')
      out += "~0";
    else if (c == '/')
      out += "~1";
    else
      out += c;
  }
  return out;
}

[[noreturn]] void refuse(const std::string& field, const std::string& keyword,
                         const std::string& where, const std::string& why) {
  throw ConstraintError(fmt::format(
      "field '{}': JSON schema keyword '{}' at '{}' {}; remove it or express it with the "
      "keywords the grammar enforces (types, properties, required, items, enum, const, anyOf, "
      "$ref, lengths, bounds, pattern, format)",
      field, keyword, where.empty() ? "/" : where, why));
}

void check_node(const nlohmann::json& node, const std::string& where, const std::string& field) {
  if (!node.is_object()) return;  // true/false schemas, or a malformed value xgrammar reports
  for (const auto& [key, value] : node.items()) {
    const std::string here = where + "/" + pointer_token(key);
    if (one_of(key, kNotEnforced))
      refuse(field, key, where, "is not enforced by the grammar engine (outputs could break it)");
    if (key == "uniqueItems" && value != false)
      refuse(field, key, where,
             "is not enforced by the grammar engine (arrays could repeat items)");
    if (key == "minProperties" && !(value.is_number() && value.get<double>() <= 0))
      refuse(field, key, where, "is not enforced by the grammar engine");
    if (key == "maxProperties") refuse(field, key, where, "is not enforced by the grammar engine");
    if (key == "allOf" && value.is_array() && value.size() > 1)
      refuse(field, key, where,
             "with more than one schema is not enforced by the grammar engine (it cannot "
             "intersect them)");
    if (one_of(key, kOneSchema) && !value.is_array()) {
      check_node(value, here, field);
    } else if ((one_of(key, kSchemaList) || one_of(key, kOneSchema)) && value.is_array()) {
      // A list of subschemas (also `items` in its older tuple form).
      for (size_t i = 0; i < value.size(); ++i)
        check_node(value[i], here + "/" + std::to_string(i), field);
    } else if (one_of(key, kSchemaMap) && value.is_object()) {
      for (const auto& [name, sub] : value.items())
        check_node(sub, here + "/" + pointer_token(name), field);
    }
  }
}

}  // namespace

void check_schema_keywords(const nlohmann::json& schema, const std::string& field) {
  check_node(schema, "", field);
}

}  // namespace relayllm::structured
