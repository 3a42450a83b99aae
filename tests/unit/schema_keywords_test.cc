// JSON schema keywords the grammar does not enforce are refused, naming the keyword and the
// JSON pointer of the schema that holds it, wherever that schema sits; the same words used as
// property names or inside data (enum, const, default) are not keywords and pass.
#include "relayllm/structured/schema_keywords.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "relayllm/structured/constraint_limits.h"
#include "relayllm/structured/constraint_spec.h"

namespace relayllm {
namespace {

using nlohmann::json;
using structured::ConstraintError;

// The error text of check_schema_keywords, or "" when the schema passes.
std::string refusal(const json& schema) {
  try {
    structured::check_schema_keywords(schema, "response_format.json_schema.schema");
  } catch (const ConstraintError& e) {
    return e.what();
  }
  return "";
}

// `inner` placed at each kind of schema position, with the pointer it ends up at.
std::vector<std::pair<json, std::string>> placements(const json& inner) {
  return {
      {inner, "/"},
      {{{"type", "object"}, {"properties", {{"a/b", inner}}}}, "/properties/a~1b"},
      {{{"type", "array"}, {"items", inner}}, "/items"},
      {{{"type", "array"}, {"prefixItems", {json::object(), inner}}}, "/prefixItems/1"},
      {{{"anyOf", {inner, {{"type", "null"}}}}}, "/anyOf/0"},
      {{{"oneOf", {{{"type", "null"}}, inner}}}, "/oneOf/1"},
      {{{"$defs", {{"x", inner}}}, {"$ref", "#/$defs/x"}}, "/$defs/x"},
      {{{"definitions", {{"x", inner}}}, {"$ref", "#/definitions/x"}}, "/definitions/x"},
      {{{"type", "object"}, {"additionalProperties", inner}}, "/additionalProperties"},
      {{{"allOf", {inner}}}, "/allOf/0"},
      {{{"type", "array"}, {"items", {json::object(), inner}}}, "/items/1"},  // tuple form
  };
}

TEST(SchemaKeywords, EveryKeywordTheGrammarSkipsIsRefusedWhereverItIs) {
  const std::pair<std::string, json> refused[] = {
      {"not", {{"not", {{"type", "string"}}}}},
      {"if", {{"if", {{"required", {"a"}}}}, {"then", {{"required", {"b"}}}}}},
      {"then", {{"then", json::object()}}},
      {"else", {{"else", json::object()}}},
      {"dependentRequired", {{"dependentRequired", {{"a", {"b"}}}}}},
      {"dependentSchemas", {{"dependentSchemas", {{"a", json::object()}}}}},
      {"multipleOf", {{"type", "integer"}, {"multipleOf", 7}}},
      {"multipleOf", {{"type", "number"}, {"multipleOf", 0.5}}},
      {"uniqueItems", {{"type", "array"}, {"uniqueItems", true}}},
      {"contains", {{"type", "array"}, {"contains", {{"const", 5}}}}},
      {"minContains", {{"type", "array"}, {"minContains", 1}}},
      {"maxContains", {{"type", "array"}, {"maxContains", 2}}},
      {"patternProperties", {{"type", "object"}, {"patternProperties", {{"^x", json::object()}}}}},
      {"propertyNames", {{"type", "object"}, {"propertyNames", {{"pattern", "^a"}}}}},
      {"minProperties", {{"type", "object"}, {"minProperties", 2}}},
      {"maxProperties", {{"type", "object"}, {"maxProperties", 3}}},
      {"allOf", {{"allOf", {{{"type", "integer"}}, {{"minimum", 3}}}}}},
  };
  for (const auto& [keyword, inner] : refused) {
    for (const auto& [schema, where] : placements(inner)) {
      const std::string e = refusal(schema);
      EXPECT_NE(e.find("field 'response_format.json_schema.schema'"), std::string::npos)
          << schema.dump() << " -> '" << e << "'";
      EXPECT_NE(e.find("keyword '" + keyword + "' at '" + where + "'"), std::string::npos)
          << schema.dump() << " -> '" << e << "'";
    }
  }
}

TEST(SchemaKeywords, NamesAndDataThatLookLikeKeywordsPass) {
  const json accepted[] = {
      {{"type", "object"},
       {"properties",
        {{"not", {{"type", "string"}}},
         {"if", {{"type", "integer"}}},
         {"uniqueItems", {{"type", "boolean"}}},
         {"allOf", {{"type", "array"}, {"items", {{"type", "string"}}}}}}},
       {"required", {"not", "if"}}},
      {{"enum", {{{"not", 1}}, {{"multipleOf", 2}}, "allOf"}}},
      {{"const", {{"if", {{"then", 1}}}}}},
      {{"type", "object"}, {"default", {{"minProperties", 3}}}, {"examples", {{{"not", 1}}}}},
      {{"type", "array"}, {"uniqueItems", false}},
      {{"type", "object"}, {"minProperties", 0}},
      {{"allOf", {{{"type", "object"}, {"properties", {{"a", {{"type", "integer"}}}}}}}}},
      {{"$defs", {{"not", {{"type", "integer"}}}}}, {"$ref", "#/$defs/not"}},
      true,
      json::object(),
  };
  for (const json& schema : accepted) EXPECT_EQ(refusal(schema), "") << schema.dump();
}

TEST(SchemaKeywords, TheLimitsCheckRunsItOnRequestSchemas) {
  structured::ConstraintLimits limits;
  EXPECT_THROW(
      structured::check_json_schema_limits(
          R"({"type": "array", "items": {"type": "integer"}, "uniqueItems": true})", "f", limits),
      ConstraintError);
  EXPECT_NO_THROW(structured::check_json_schema_limits(
      R"({"type": "array", "items": {"type": "integer"}, "maxItems": 3})", "f", limits));
}

}  // namespace
}  // namespace relayllm
