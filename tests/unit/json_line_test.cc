// JSON lines stay one line for every splitter: U+0085, U+2028 and U+2029 in strings are escaped,
// and the line still parses to the same value.
#include "relayllm/common/json_line.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "relayllm/common/utf8.h"

namespace relayllm {
namespace {

bool has_raw_separator(const std::string& text) {
  return text.find("\xC2\x85") != std::string::npos ||
         text.find("\xE2\x80\xA8") != std::string::npos ||
         text.find("\xE2\x80\xA9") != std::string::npos || text.find('\n') != std::string::npos ||
         text.find('\r') != std::string::npos;
}

TEST(JsonLine, EscapesEachSeparatorAndRoundTrips) {
  for (const char* sep : {"\xC2\x85", "\xE2\x80\xA8", "\xE2\x80\xA9"}) {
    nlohmann::json value = {{"text", std::string("a") + sep + "b" + sep}, {"n", 1}};
    const std::string line = json_line(value);
    EXPECT_FALSE(has_raw_separator(line)) << line;
    EXPECT_EQ(nlohmann::json::parse(line), value);
  }
  EXPECT_EQ(json_line(nlohmann::json{{"t", "\xE2\x80\xA8"}}), R"({"t":"\u2028"})");
  EXPECT_EQ(json_line(nlohmann::json{{"t", "\xC2\x85"}}), R"({"t":"\u0085"})");
}

TEST(JsonLine, NeighboursOfTheSeparatorsAreKept) {
  // Same lead bytes, other characters: U+0084, U+0086, U+2027, U+202A, U+2080.
  for (const char* text :
       {"\xC2\x84", "\xC2\x86", "\xE2\x80\xA7", "\xE2\x80\xAA", "\xE2\x82\x80"}) {
    nlohmann::json value = {{"t", text}};
    const std::string line = json_line(value);
    EXPECT_NE(line.find(text), std::string::npos) << "escaped a character it should keep";
    EXPECT_EQ(nlohmann::json::parse(line), value);
  }
}

TEST(JsonLine, RandomTextsWithSeparatorsAndInvalidBytesStayOneParsableLine) {
  std::mt19937 rng(7);
  const std::string pieces[] = {"a",    " ",        "\n",           "\"",
                                "\\",   "\xC2\x85", "\xE2\x80\xA8", "\xE2\x80\xA9",
                                "\xC2", "\xE2\x80", "\xFF",         "\xE4\xBD\xA0"};
  std::uniform_int_distribution<size_t> pick(0, std::size(pieces) - 1), len(0, 40);
  for (int i = 0; i < 2000; ++i) {
    std::string text;
    for (size_t n = len(rng); n > 0; --n) text += pieces[pick(rng)];
    const std::string line = json_line(nlohmann::json{{"text", text}, {"i", i}});
    ASSERT_FALSE(has_raw_separator(line)) << line;
    const nlohmann::json back = nlohmann::json::parse(line);
    // Invalid bytes become U+FFFD, exactly as the lossy UTF-8 policy of the rest of the engine.
    EXPECT_EQ(back["text"].get<std::string>(), utf8::to_valid(text)) << i;
  }
}

TEST(JsonLine, OrderedJsonKeepsItsKeyOrder) {
  nlohmann::ordered_json value;
  value["z"] = "\xE2\x80\xA9";
  value["a"] = 1;
  EXPECT_EQ(json_line(value), R"({"z":"\u2029","a":1})");
}

}  // namespace
}  // namespace relayllm
