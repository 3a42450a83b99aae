// Tool-call parsing on recorded outputs of each family's format: well-formed, several
// calls, content before calls, partial (cut off) and malformed outputs, in whole-output
// and streaming modes. The streaming checks hold for every way of cutting the output into
// pieces: the pieces' content and arguments must add up to what the whole parse gives.
#include "relayllm/tools/tool_call_parser.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "relayllm/common/error.h"

namespace relayllm {
namespace {

struct Expected {
  std::optional<std::string> content;
  std::vector<ToolCall> calls;  // empty: the output stays text
};

struct Case {
  const char* name;
  std::string parser;
  std::string output;
  Expected expected;
};

std::unique_ptr<ToolCallFormat> format_for(const std::string& parser) {
  if (parser == "required") return make_required_calls_format();
  if (parser.rfind("named:", 0) == 0) return make_named_call_format(parser.substr(6));
  return make_tool_call_format(parser);
}

const std::string kWeather = R"({"city": "Paris", "unit": "celsius"})";
const std::string kNested = R"({"q": {"tags": ["a", "b}"], "n": 1.5e3, "s": "quote \" brace }"}})";

std::vector<Case> cases() {
  const std::string text = "The weather in Paris is mild.";
  return {
      // Hermes / Qwen: <tool_call> tags.
      {"hermes_one",
       "hermes",
       "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": " + kWeather + "}\n</tool_call>",
       {std::nullopt, {{"get_weather", kWeather}}}},
      {"hermes_content_then_two",
       "hermes",
       "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": " + kWeather +
           "}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>",
       {"Let me check.", {{"get_weather", kWeather}, {"now", "{}"}}}},
      {"hermes_unclosed_last",
       "hermes",
       "<tool_call>\n{\"name\": \"search\", \"arguments\": " + kNested + "}",
       {std::nullopt, {{"search", kNested}}}},
      {"hermes_arguments_as_string",
       "hermes",
       "<tool_call>{\"name\": \"now\", \"arguments\": \"{\\\"tz\\\": \\\"UTC\\\"}\"}</tool_call>",
       {std::nullopt, {{"now", R"({"tz": "UTC"})"}}}},
      {"hermes_no_arguments",
       "hermes",
       "<tool_call>{\"name\": \"now\"}</tool_call>",
       {std::nullopt, {{"now", "{}"}}}},
      {"hermes_plain_text", "hermes", text, {text, {}}},
      {"hermes_text_mentions_tag", "hermes", "Use <tool to call", {"Use <tool to call", {}}},
      {"hermes_bad_json", "hermes", "<tool_call>\n{\"name\": get_weather}\n</tool_call>", {}},
      {"hermes_cut_off",
       "hermes",
       "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"ci",
       {}},
      {"hermes_no_name", "hermes", "<tool_call>{\"arguments\": {}}</tool_call>", {}},
      {"hermes_arguments_not_object",
       "hermes",
       "<tool_call>{\"name\": \"f\", \"arguments\": [1]}</tool_call>",
       {}},
      {"hermes_text_inside_tag",
       "hermes",
       "<tool_call>{\"name\": \"f\", \"arguments\": {}} oops</tool_call>",
       {}},
      {"hermes_empty_tag", "hermes", "<tool_call></tool_call>", {}},
      // Llama 3.x JSON.
      {"llama_one",
       "llama3_json",
       "{\"name\": \"get_weather\", \"parameters\": " + kWeather + "}",
       {std::nullopt, {{"get_weather", kWeather}}}},
      {"llama_python_tag",
       "llama3_json",
       "<|python_tag|>{\"name\": \"search\", \"parameters\": " + kNested + "}",
       {std::nullopt, {{"search", kNested}}}},
      {"llama_two_calls",
       "llama3_json",
       "{\"name\": \"get_weather\", \"arguments\": " + kWeather +
           "}; {\"name\": \"now\", \"parameters\": {}}",
       {std::nullopt, {{"get_weather", kWeather}, {"now", "{}"}}}},
      {"llama_leading_space",
       "llama3_json",
       "  \n{\"name\": \"now\", \"parameters\": {}}",
       {std::nullopt, {{"now", "{}"}}}},
      {"llama_plain_text", "llama3_json", text, {text, {}}},
      {"llama_json_answer_not_call", "llama3_json", "{\"answer\": 42}", {}},
      {"llama_trailing_text",
       "llama3_json",
       "{\"name\": \"now\", \"parameters\": {}} and more",
       {}},
      {"llama_cut_off", "llama3_json", "{\"name\": \"now\", \"param", {}},
      {"llama_tag_then_code", "llama3_json", "<|python_tag|>print(1)", {}},
      // Mistral.
      {"mistral_list",
       "mistral",
       "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": " + kWeather +
           "}, {\"name\": \"now\", \"arguments\": {}}]",
       {std::nullopt, {{"get_weather", kWeather}, {"now", "{}"}}}},
      {"mistral_content_first",
       "mistral",
       "Sure.[TOOL_CALLS][{\"name\": \"search\", \"arguments\": " + kNested + "}]",
       {"Sure.", {{"search", kNested}}}},
      {"mistral_single_object",
       "mistral",
       "[TOOL_CALLS] {\"name\": \"now\", \"arguments\": {}}",
       {std::nullopt, {{"now", "{}"}}}},
      {"mistral_plain_text", "mistral", text, {text, {}}},
      {"mistral_empty_list", "mistral", "[TOOL_CALLS] []", {}},
      // Complete calls in a list the output ended before closing: kept, as an unclosed
      // last <tool_call> is.
      {"mistral_unclosed_list",
       "mistral",
       "[TOOL_CALLS] [{\"name\": \"now\", \"arguments\": {}}",
       {std::nullopt, {{"now", "{}"}}}},
      {"mistral_garbage", "mistral", "[TOOL_CALLS] call now()", {}},
      // The shapes a grammar forces: tool_choice "required" and a named function.
      {"required_two",
       "required",
       "[{\"name\": \"get_weather\", \"parameters\": " + kWeather +
           "}, {\"name\": \"now\", \"parameters\": {}}]",
       {std::nullopt, {{"get_weather", kWeather}, {"now", "{}"}}}},
      {"required_not_list", "required", "I will call get_weather.", {}},
      {"required_trailing", "required", "[{\"name\": \"now\", \"parameters\": {}}] extra", {}},
      {"named", "named:get_weather", kWeather, {std::nullopt, {{"get_weather", kWeather}}}},
      {"named_nested",
       "named:search",
       "\n" + kNested + "\n",
       {std::nullopt, {{"search", kNested}}}},
      {"named_not_object", "named:get_weather", "Paris", {}},
      {"named_cut_off", "named:get_weather", "{\"city\": \"Pa", {}},
      {"named_trailing", "named:get_weather", "{\"city\": \"Paris\"} ok", {}},
  };
}

void expect_whole(const Case& c) {
  auto format = format_for(c.parser);
  ToolCallOutput out = parse_tool_calls(*format, c.output);
  if (c.expected.calls.empty()) {
    EXPECT_TRUE(out.calls.empty()) << c.name;
    EXPECT_EQ(out.content, c.output) << c.name << ": a malformed output stays text";
    return;
  }
  EXPECT_EQ(out.content, c.expected.content) << c.name;
  ASSERT_EQ(out.calls.size(), c.expected.calls.size()) << c.name;
  for (size_t i = 0; i < out.calls.size(); ++i) {
    EXPECT_EQ(out.calls[i].name, c.expected.calls[i].name) << c.name;
    EXPECT_EQ(out.calls[i].arguments, c.expected.calls[i].arguments) << c.name;
    EXPECT_TRUE(nlohmann::json::parse(out.calls[i].arguments).is_object()) << c.name;
  }
}

// What a stream delivered, put back together.
struct Streamed {
  std::string content;
  std::vector<ToolCall> calls;
};

Streamed stream(const ToolCallFormat& format, const std::vector<std::string>& pieces,
                bool parallel = true) {
  ToolCallStreamer streamer(format, parallel);
  Streamed out;
  auto take = [&](const ToolStreamDelta& d) {
    out.content += d.content;
    for (const ToolCallDelta& call : d.calls) {
      if (call.first) {
        EXPECT_EQ(size_t(call.index), out.calls.size()) << "calls start in order";
        out.calls.push_back({call.name, ""});
      }
      EXPECT_LT(size_t(call.index), out.calls.size()) << "arguments before the call's start";
      if (size_t(call.index) < out.calls.size()) out.calls[call.index].arguments += call.arguments;
    }
  };
  for (const std::string& piece : pieces) take(streamer.push(piece));
  take(streamer.finish());
  EXPECT_EQ(streamer.calls_sent(), out.calls.size());
  return out;
}

void expect_stream_matches_whole(const Case& c, const std::vector<std::string>& pieces,
                                 const std::string& how) {
  auto format = format_for(c.parser);
  ToolCallOutput whole = parse_tool_calls(*format, c.output);
  Streamed s = stream(*format, pieces);
  const std::string where = std::string(c.name) + " (" + how + ")";
  if (whole.calls.empty() && !s.calls.empty()) {
    // A call region that turned malformed after its start went out: the stream stops
    // there. What it sent is still the output's own text, in order.
    EXPECT_EQ(c.output.compare(0, s.content.size(), s.content), 0) << where;
    for (const ToolCall& call : s.calls)
      EXPECT_NE(c.output.find(call.arguments), std::string::npos) << where;
    return;
  }
  ASSERT_EQ(s.calls.size(), whole.calls.size()) << where;
  for (size_t i = 0; i < s.calls.size(); ++i) {
    EXPECT_EQ(s.calls[i].name, whole.calls[i].name) << where;
    EXPECT_EQ(s.calls[i].arguments, whole.calls[i].arguments) << where;
  }
  if (whole.calls.empty()) {
    EXPECT_EQ(s.content, c.output) << where << ": held-back text comes out as content";
  } else {
    // The stream sends the content as it is; the whole parse trims the space before calls.
    std::string trimmed = s.content;
    while (!trimmed.empty() && std::isspace(static_cast<unsigned char>(trimmed.back())))
      trimmed.pop_back();
    EXPECT_EQ(trimmed, whole.content.value_or("")) << where;
  }
}

TEST(ToolCallParser, WholeOutputs) {
  for (const Case& c : cases()) expect_whole(c);
}

TEST(ToolCallParser, StreamingInOnePieceAndByteByByte) {
  for (const Case& c : cases()) {
    expect_stream_matches_whole(c, {c.output}, "one piece");
    std::vector<std::string> bytes;
    for (char ch : c.output) bytes.push_back(std::string(1, ch));
    expect_stream_matches_whole(c, bytes, "byte by byte");
  }
}

TEST(ToolCallParser, StreamingInRandomPieces) {
  std::mt19937 rng(17);
  for (const Case& c : cases()) {
    for (int round = 0; round < 20; ++round) {
      std::vector<std::string> pieces;
      for (size_t pos = 0; pos < c.output.size();) {
        size_t n = std::uniform_int_distribution<size_t>(1, 7)(rng);
        pieces.push_back(c.output.substr(pos, n));
        pos += n;
      }
      expect_stream_matches_whole(c, pieces, "random pieces, round " + std::to_string(round));
    }
  }
}

TEST(ToolCallParser, StreamSendsTheCallStartBeforeItsArgumentsEnd) {
  // The first delta of a call carries its name as soon as the name is complete.
  auto format = make_tool_call_format("hermes");
  ToolCallStreamer streamer(*format, true);
  EXPECT_TRUE(streamer.push("Checking. <tool").calls.empty());
  ToolStreamDelta d = streamer.push("_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\"");
  EXPECT_EQ(d.content, "");
  ASSERT_EQ(d.calls.size(), 1u);
  EXPECT_TRUE(d.calls[0].first);
  EXPECT_EQ(d.calls[0].name, "get_weather");
  EXPECT_EQ(d.calls[0].arguments, "{\"city\"");
  d = streamer.push(": \"Paris\"}}\n</tool_call>");
  ASSERT_EQ(d.calls.size(), 1u);
  EXPECT_FALSE(d.calls[0].first);
  EXPECT_EQ(d.calls[0].arguments, ": \"Paris\"}");
  EXPECT_TRUE(streamer.finish().empty());
}

TEST(ToolCallParser, ContentBeforeACallStreamsButAPossibleMarkerIsHeldBack) {
  auto format = make_tool_call_format("mistral");
  ToolCallStreamer streamer(*format, true);
  EXPECT_EQ(streamer.push("Sure, ").content, "Sure, ");
  EXPECT_EQ(streamer.push("one moment [TOOL").content, "one moment ");
  EXPECT_EQ(streamer.push(" not a call").content, "[TOOL not a call");
  EXPECT_EQ(streamer.finish().content, "");
}

TEST(ToolCallParser, ParallelFalseKeepsTheFirstCall) {
  const Case c = cases()[1];  // content, then two calls
  auto format = format_for(c.parser);
  ToolCallOutput out = parse_tool_calls(*format, c.output, false);
  ASSERT_EQ(out.calls.size(), 1u);
  EXPECT_EQ(out.calls[0].name, "get_weather");
  Streamed s = stream(*format, {c.output}, false);
  ASSERT_EQ(s.calls.size(), 1u);
  EXPECT_EQ(s.calls[0].arguments, kWeather);
}

TEST(ToolCallParser, NeverThrowsOnCutOrMutatedOutputs) {
  // Every prefix of every recorded output (an output stopped by max_tokens) and random
  // byte mutations: never an exception, and calls always carry object arguments.
  std::mt19937 rng(5);
  const std::string alphabet = "{}[]\",:\\ <>/|_ntrue0123456789abc\n";
  for (const Case& c : cases()) {
    auto format = format_for(c.parser);
    std::vector<std::string> variants;
    for (size_t n = 0; n <= c.output.size(); ++n) variants.push_back(c.output.substr(0, n));
    for (int k = 0; k < 200; ++k) {
      std::string m = c.output;
      for (int edits = 1 + int(rng() % 3); edits > 0 && !m.empty(); --edits)
        m[rng() % m.size()] = alphabet[rng() % alphabet.size()];
      variants.push_back(m);
    }
    for (const std::string& v : variants) {
      ToolCallOutput out;
      ASSERT_NO_THROW(out = parse_tool_calls(*format, v)) << c.name << ": " << v;
      if (out.calls.empty()) EXPECT_EQ(out.content, v);
      for (const ToolCall& call : out.calls) {
        auto args = nlohmann::json::parse(call.arguments, nullptr, false);
        EXPECT_TRUE(!args.is_discarded() && args.is_object()) << c.name << ": " << v;
      }
      ASSERT_NO_THROW(stream(*format, {v.substr(0, v.size() / 2), v.substr(v.size() / 2)}));
    }
  }
}

TEST(ToolCallParser, ParserNamesAreVllms) {
  for (const std::string& name : tool_call_parser_names())
    EXPECT_NE(make_tool_call_format(name), nullptr);
  EXPECT_THROW(make_tool_call_format("pythonic"), Error);
  EXPECT_TRUE(make_tool_call_format("mistral")->short_call_ids());
  EXPECT_TRUE(make_tool_call_format("mistral")->keeps_special_tokens());
  EXPECT_FALSE(make_tool_call_format("llama3_json")->keeps_special_tokens());
}

}  // namespace
}  // namespace relayllm
