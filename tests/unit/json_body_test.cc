// parse_json_body: the request-body parser refuses deep nesting before building it,
// names the path of every error, and still builds ordinary documents exactly.
#include "relayllm/server/json_body.h"

#include <gtest/gtest.h>

#include <string>

#include "relayllm/chat/chat_template.h"
#include "relayllm/common/error.h"
#include "relayllm/server/api_error.h"

namespace relayllm {
namespace {

std::string error_of(const std::string& text, int depth = 16) {
  try {
    parse_json_body(text, depth);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    return e.what();
  }
  return "";
}

TEST(JsonBody, BuildsTheSameDocumentAsNlohmann) {
  const std::string text =
      R"({"a": [1, -2, 3.5, "x", null, true, {"b": [[], {}]}], "c": {"d": 18446744073709551615},)"
      R"( "a2": "\u00e9", "dup": 1, "dup": 2})";
  EXPECT_EQ(parse_json_body(text, 16), nlohmann::json::parse(text));
}

TEST(JsonBody, DepthLimitCountsTheTopLevel) {
  EXPECT_NO_THROW(parse_json_body("[[[]]]", 3));
  EXPECT_NE(error_of("[[[[]]]]", 3).find("nested deeper than 3 levels"), std::string::npos);
  EXPECT_NO_THROW(parse_json_body(R"({"a": {"b": 1}})", 2));
  EXPECT_NE(error_of(R"({"a": {"b": {}}})", 2).find("field 'a.b'"), std::string::npos);
}

TEST(JsonBody, HugeNestingFailsFastWithoutRecursion) {
  std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
  EXPECT_NE(error_of(deep, 128).find("nested deeper than 128"), std::string::npos);
  std::string objects;
  for (int i = 0; i < 200000; ++i) objects += R"({"k":)";
  EXPECT_NE(error_of(objects, 128).find("field 'k.k.k"), std::string::npos);
}

TEST(JsonBody, ErrorsNameThePath) {
  EXPECT_NE(error_of(R"({"temperature": 1e400})").find("field 'temperature': number overflow"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"m": [{"c": 1}, {"c": -1e999}]})").find("field 'm[1].c'"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"p": [[1], [2, 3, 1e400]]})").find("field 'p[1][2]'"), std::string::npos);
  EXPECT_NE(error_of(R"({"a": tru})").find("field 'a'"), std::string::npos);
  EXPECT_NE(error_of(R"({"a": 1} x)").find("syntax error"), std::string::npos);
  EXPECT_NE(error_of("").find("malformed JSON body"), std::string::npos);
  EXPECT_NE(error_of("{\"a\": \"\xff\"}").find("field 'a'"), std::string::npos);
}

TEST(ChatTemplateDepth, DeepValuesAreRefusedNotRecursed) {
  ChatTemplate tmpl("{{ messages[0]['content'] }}");
  nlohmann::json messages = nlohmann::json::array({{{"role", "user"}, {"content", "hi"}}});
  // Built in place: copying a value this deep would itself recurse.
  nlohmann::json* inner = &(messages[0]["x"] = nlohmann::json::array());
  for (int i = 0; i < 100000; ++i) {
    inner->push_back(nlohmann::json::array());
    inner = &inner->back();
  }
  ChatTemplateOptions options;
  EXPECT_THROW(tmpl.render(messages, options), Error);
}

}  // namespace
}  // namespace relayllm
