// Chat templates from hostile model files: every way to make parsing or rendering recurse
// without bound, overflow an integer, allocate without bound or run without end is refused
// with one line (Error), never a crash.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "relayllm/chat/chat_template.h"
#include "relayllm/common/error.h"

namespace relayllm {
namespace {

std::string render(const std::string& source) {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array(
      {{{"role", "user"}, {"content", "hi"}}, {{"role", "assistant"}, {"content", "yo"}}});
  return ChatTemplate(source).render(messages, ChatTemplateOptions{});
}

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

void expect_refused(const std::string& source, const std::string& part) {
  SCOPED_TRACE(source.substr(0, 80));
  try {
    render(source);
    ADD_FAILURE() << "no Error thrown";
  } catch (const Error& e) {
    std::string message = e.what();
    EXPECT_NE(message.find(part), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

// Every recursive construct of the grammar, nested 10 deep (fine) and 10,000 deep (refused).
TEST(HostileChatTemplate, NestingIsBoundedForEveryConstruct) {
  auto nested = [](int n, const std::string& open, const std::string& leaf,
                   const std::string& close) { return repeat(open, n) + leaf + repeat(close, n); };
  const std::vector<std::tuple<std::string, std::string, std::string, std::string>> cases = {
      {"{{ ", "(", "1", ") }}"},
      {"{{ ", "[", "1", "] }}"},
      {"{{ ", "{'a': ", "1", "} }}"},
      {"{{ ", "not ", "1", " }}"},
      {"{{ ", "- ", "1", " }}"},
      {"{{ ", "1 if 0 else ", "2", " }}"},
      {"{{ ", "'' ~ (", "1", ") }}"},
      {"", "{% if 1 %}", "x", "{% endif %}"},
      {"", "{% for i in [1] %}", "x", "{% endfor %}"},
      {"", "{% macro m() %}", "x", "{% endmacro %}"},
  };
  for (const auto& [prefix, open, leaf, close] : cases) {
    // The tag closer of expression cases comes once, after the nesting.
    const bool expr = !prefix.empty();
    const std::string end = expr ? close.substr(close.size() - 3) : "";
    const std::string inner_close = expr ? close.substr(0, close.size() - 3) : close;
    EXPECT_NO_THROW(render(prefix + nested(10, open, leaf, inner_close) + end)) << open;
    expect_refused(prefix + nested(10000, open, leaf, inner_close) + end, "chat template");
  }
  expect_refused("{{ " + repeat("(", 100) + "1" + repeat(")", 100) + " }}",
                 "nesting deeper than 64 levels");
  expect_refused(repeat("{% if 1 %}", 100) + repeat("{% endif %}", 100),
                 "nesting deeper than 64 levels");
}

// Chains deepen the syntax tree without recursion in the parser: bounded per tag.
TEST(HostileChatTemplate, LongChainsAreBounded) {
  EXPECT_EQ(render("{{ 1" + repeat(" + 1", 400) + " }}"), "401");
  for (const char* link : {" + 1", " ~ 'a'", " and 1", ".x", "[0]", " | string", "()"})
    expect_refused("{{ 1" + repeat(link, 5000) + " }}", "a tag of more than 1000 tokens");
  expect_refused("{% set x = 1" + repeat(" * 1", 5000) + " %}", "a tag of more than 1000 tokens");
}

TEST(HostileChatTemplate, IntegerOverflowIsAnErrorNotUndefinedBehaviour) {
  EXPECT_EQ(render("{{ 2 ** 62 }}"), "4611686018427387904");
  EXPECT_EQ(render("{{ (-2) ** 3 }} {{ 3 ** 0 }} {{ 0 ** 5 }} {{ (-1) ** 1000000000000 }}"),
            "-8 1 0 1");
  EXPECT_EQ(render("{{ 9223372036854775806 + 1 }}"), "9223372036854775807");
  for (const char* source :
       {"{{ 9223372036854775807 + 1 }}", "{{ -9223372036854775807 - 2 }}",
        "{{ 4611686018427387904 * 2 }}", "{{ 2 ** 64 }}", "{{ 3 ** 1000000000000000000 }}",
        "{{ (-9223372036854775807 - 1) // -1 }}", "{{ -(-9223372036854775807 - 1) }}"})
    expect_refused(source, "integer overflow");
  EXPECT_EQ(render("{{ (-9223372036854775807 - 1) % -1 }}"), "0");
  expect_refused("{{ 99999999999999999999 }}",
                 "integer literal 99999999999999999999 is out of range");
  expect_refused("{{ 1e999 }}", "float literal 1e999 is out of range");
  EXPECT_EQ(render("{{ 1e300 | int }} {{ '1e300' | int }} {{ -1e300 | int }}"), "0 0 0");
}

TEST(HostileChatTemplate, WorkAndMemoryAreBounded) {
  expect_refused("{{ 'ab' * 100000000000 }}", "exceeds");
  expect_refused("{{ [1, 2] * 100000000000 }}", "exceeds");
  expect_refused("{% set s = 'x' * 60000000 %}{{ s }}{{ s }}", "the output exceeds");
  expect_refused("{% for i in range(600) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
                 "more than 500000 steps");
  EXPECT_EQ(render("{% for i in range(300) %}{% for j in range(300) %}{% endfor %}{% endfor %}ok"),
            "ok");
}

}  // namespace
}  // namespace relayllm
