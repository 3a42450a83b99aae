// The grammar compiler's cache: equal schemas hit whatever their whitespace, different ones
// (key order included) miss, the cache stays within its bound (least recently used out first),
// concurrent requests for one schema compile it once, and prepare() builds the token table once.
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "relayllm/structured/constraint_spec.h"
#include "relayllm/structured/grammar_compiler.h"

namespace relayllm {
namespace {

using structured::ConstraintKind;
using structured::ConstraintSpec;
using structured::GrammarCompiler;
using structured::GrammarCompilerOptions;
using structured::strip_json_whitespace;

constexpr int32_t kEos = 257;  // make_byte_tokenizer's "</s>"

GrammarCompiler byte_compiler(GrammarCompilerOptions options = {}) {
  return GrammarCompiler(Tokenizer::make_byte_tokenizer(), 258, {kEos}, {}, options);
}

ConstraintSpec schema(std::string text) {
  ConstraintSpec s;
  s.kind = ConstraintKind::kJsonSchema;
  s.text = std::move(text);
  s.field = "guided_json";
  return s;
}

TEST(StructuredCache, StripJsonWhitespaceKeepsStringsAndSeparatesTokens) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"a": 1, "b": [1, 2]})", R"({"a":1,"b":[1,2]})"},
      {"{\n  \"a\" :\t{ \"b\" : true }\r\n}\n", R"({"a":{"b":true}})"},
      {R"(  {"s": "two  words, { not: structural }"}  )",
       R"({"s":"two  words, { not: structural }"})"},
      {R"({"q": "a \" quote, then  space", "n": null})",
       R"({"q":"a \" quote, then  space","n":null})"},
      {R"({"e": "ends in backslash \\", "x": 1})", R"({"e":"ends in backslash \\","x":1})"},
      // Invalid texts stay invalid: a run between two tokens becomes one space.
      {R"({"a": tr ue})", R"({"a":tr ue})"},
      {"[1 \n 2]", "[1 2]"},
      {R"({"a" "b"})", R"({"a" "b"})"},
      {"", ""},
      {" \n\t ", ""},
  };
  for (const auto& [in, want] : cases) EXPECT_EQ(strip_json_whitespace(in), want) << in;
  // Idempotent.
  for (const auto& [in, want] : cases) EXPECT_EQ(strip_json_whitespace(want), want) << want;
}

TEST(StructuredCache, EqualSchemasHitWhateverTheirWhitespace) {
  GrammarCompiler c = byte_compiler();
  auto compact = c.compile(schema(R"({"type":"object","properties":{"a":{"type":"integer"}}})"));
  auto pretty =
      c.compile(schema("{\n  \"type\": \"object\",\n  \"properties\": {\n    \"a\": {\"type\": "
                       "\"integer\"}\n  }\n}"));
  EXPECT_EQ(compact.get(), pretty.get());
  EXPECT_EQ(c.stats().compiles, 1);
  EXPECT_EQ(c.stats().cache_hits, 1);
  // Key order orders the output's properties: a different schema.
  auto a_first = c.compile(schema(R"({"properties": {"a": {"type": "integer"}, "b": {}}})"));
  auto b_first = c.compile(schema(R"({"properties": {"b": {}, "a": {"type": "integer"}}})"));
  EXPECT_NE(a_first.get(), b_first.get());
  // A space inside a string is part of the schema.
  auto one = c.compile(schema(R"({"enum": ["a b"]})"));
  auto two = c.compile(schema(R"({"enum": ["a  b"]})"));
  EXPECT_NE(one.get(), two.get());
  EXPECT_EQ(c.stats().compiles, 5);
  // Other kinds keep their text as is: whitespace in a regex is part of it.
  ConstraintSpec r;
  r.kind = ConstraintKind::kRegex;
  r.text = "a b";
  ConstraintSpec r2 = r;
  r2.text = "a  b";
  EXPECT_NE(r.cache_key(), r2.cache_key());
}

TEST(StructuredCache, StaysWithinItsBoundLeastRecentlyUsedOut) {
  GrammarCompilerOptions options;
  options.max_cached = 2;
  GrammarCompiler c = byte_compiler(options);
  auto a = schema(R"({"type": "integer"})");
  auto b = schema(R"({"type": "boolean"})");
  auto d = schema(R"({"type": "null"})");
  c.compile(a);
  c.compile(b);
  c.compile(a);  // hit: a is now the most recent
  EXPECT_EQ(c.stats().compiles, 2);
  c.compile(d);  // evicts b
  c.compile(a);  // still cached
  EXPECT_EQ(c.stats().compiles, 3);
  EXPECT_EQ(c.stats().cache_hits, 2);
  c.compile(b);  // compiled again; evicts d
  EXPECT_EQ(c.stats().compiles, 4);
  c.compile(d);
  EXPECT_EQ(c.stats().compiles, 5);
}

TEST(StructuredCache, ConcurrentRequestsForOneSchemaCompileItOnce) {
  GrammarCompilerOptions options;
  options.threads = 2;
  GrammarCompiler c = byte_compiler(options);
  EXPECT_EQ(c.threads(), 2);
  c.prepare();
  c.prepare();  // idempotent
  const std::string text =
      R"({"type": "object", "properties": {"name": {"type": "string"}, "n": {"enum": [1, 2]}}})";
  std::vector<std::shared_ptr<const structured::CompiledConstraint>> got(6);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i)
    threads.emplace_back([&, i] { got[i] = c.compile(schema(i % 2 ? text : " " + text + "\n")); });
  for (auto& t : threads) t.join();
  for (const auto& g : got) EXPECT_EQ(g.get(), got[0].get());
  EXPECT_EQ(c.stats().compiles, 1);
  EXPECT_EQ(c.stats().cache_hits, 5);
}

TEST(StructuredCache, DefaultThreadsAreTheUsableCoresUpToEight) {
  GrammarCompiler c = byte_compiler();
  EXPECT_GE(c.threads(), 1);
  EXPECT_LE(c.threads(), 8);
}

}  // namespace
}  // namespace relayllm
