// Tools in chat requests: what the template receives (the tools in the client's key order,
// tool-call arguments as objects), the choice rules (vLLM's), and what a grammar would have
// to enforce for "required" and a named function.
#include "relayllm/serving/chat_tools.h"

#include <gtest/gtest.h>

#include <string>

#include "../common/temp_dir.h"
#include "relayllm/common/error.h"
#include "relayllm/serving/request_parser.h"

namespace relayllm {
namespace {

using testing::error_of;

using ojson = nlohmann::ordered_json;

const char* kTools = R"([{"type": "function", "function": {"name": "get_weather",
    "description": "Weather", "parameters": {"type": "object", "required": ["city"],
    "properties": {"city": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "now"}}])";

ToolSettings auto_enabled() { return {"hermes", true}; }

TEST(ChatTools, ChoicesFollowVllm) {
  ojson body = {{"tools", ojson::parse(kTools)}};
  EXPECT_EQ(read_tool_request(body, auto_enabled()).choice, ToolChoice::kAuto)
      << "tools alone mean auto";
  EXPECT_NE(error_of([&] {
              read_tool_request(body, {"hermes", false});
            }).find("requires --enable-auto-tool-choice and --tool-call-parser"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              read_tool_request(body, {"", true});
            }).find("requires"),
            std::string::npos);
  body["tool_choice"] = "none";
  ToolRequest none = read_tool_request(body, {});
  EXPECT_FALSE(none.parses_calls());
  EXPECT_FALSE(none.tools.is_null()) << "tools still reach the template";
  body["tool_choice"] = {{"type", "function"}, {"function", {{"name", "now"}}}};
  ToolRequest named = read_tool_request(body, {});
  EXPECT_EQ(named.choice, ToolChoice::kNamed);
  EXPECT_EQ(named.constraint_schema(), ojson({{"type", "object"}}));
  body["tool_choice"]["function"]["name"] = "get_weather";
  EXPECT_EQ(read_tool_request(body, {}).constraint_schema()["required"], ojson({"city"}));
  body["tool_choice"] = "required";
  body["parallel_tool_calls"] = false;
  ToolRequest required = read_tool_request(body, {});
  ojson schema = required.constraint_schema();
  EXPECT_EQ(schema["type"], "array");
  EXPECT_EQ(schema["minItems"], 1);
  EXPECT_EQ(schema["maxItems"], 1) << "parallel_tool_calls false: one call";
  EXPECT_EQ(schema["items"]["anyOf"].size(), 2u);
  EXPECT_EQ(schema["items"]["anyOf"][1]["properties"]["name"]["enum"], ojson({"now"}));
  EXPECT_NE(error_of([&] {
              read_tool_request(ojson{{"tool_choice", "required"}}, {});
            }).find("'tools' must be set"),
            std::string::npos);
}

TEST(ChatTools, FormatsPerChoice) {
  ojson body = {{"tools", ojson::parse(kTools)}};
  ToolSettings settings{"mistral", true};
  auto format = read_tool_request(body, settings).format(settings);
  ASSERT_NE(format, nullptr);
  EXPECT_TRUE(format->short_call_ids());
  body["tool_choice"] = "required";
  format = read_tool_request(body, settings).format(settings);
  EXPECT_EQ(parse_tool_calls(*format, R"([{"name": "now", "parameters": {}}])").calls.size(), 1u);
  body["tool_choice"] = "none";
  EXPECT_EQ(read_tool_request(body, settings).format(settings), nullptr);
}

TEST(ChatTools, HistoryArgumentsBecomeObjectsInTheirOrder) {
  ojson messages = ojson::parse(R"([{"role": "user", "content": "x"},
      {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
        "function": {"name": "f", "arguments": "{\"z\": 1, \"a\": [2]}"}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "ok"}])");
  prepare_tool_messages(messages);
  EXPECT_EQ(messages[1]["tool_calls"][0]["function"]["arguments"].dump(), R"({"z":1,"a":[2]})");
  messages[1]["tool_calls"][0]["function"]["arguments"] = "{oops";
  EXPECT_NE(error_of([&] {
              prepare_tool_messages(messages);
            }).find("field 'messages[1].tool_calls[0].function.arguments' is not valid JSON"),
            std::string::npos);
  ojson deep = ojson::parse(R"([{"role": "assistant", "content": "", "tool_calls": [
      {"function": {"name": "f", "arguments": ""}}]}])");
  deep[0]["tool_calls"][0]["function"]["arguments"] = std::string(100, '[') + std::string(100, ']');
  EXPECT_NE(error_of([&] { prepare_tool_messages(deep); }).find("nests deeper"), std::string::npos);
}

TEST(ChatTools, TemplateGetsToolsInTheClientsOrderAndParserKeepsSpecialTokens) {
  Tokenizer tokenizer = Tokenizer::make_byte_tokenizer();
  ChatTemplate chat{
      "{{ tools | tojson }}|{% for m in messages %}{{ m.role }}:{{ m.content }}"
      "{% for c in m.tool_calls or [] %}[{{ c.function.arguments | tojson }}]{% endfor %}"
      "{% endfor %}"};
  RequestContext context;
  context.tokenizer = &tokenizer;
  context.vocab_size = tokenizer.vocab_size();
  context.chat_template = &chat;
  context.tools = {"hermes", true};
  ojson body = ojson::parse(R"({"messages": [{"role": "user", "content": "hi"},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
        "function": {"name": "now", "arguments": "{\"tz\": \"UTC\", \"a\": 1}"}}]}],
      "tools": [{"type": "function", "function": {"name": "now", "description": "d"}}]})");
  ParsedRequest r = parse_chat_request(body, context);
  EXPECT_EQ(r.prompts[0].text,
            R"([{"type": "function", "function": {"name": "now", "description": "d"}}]|)"
            R"(user:hiassistant:[{"tz": "UTC", "a": 1}])");
  EXPECT_EQ(r.tools.choice, ToolChoice::kAuto);
  EXPECT_FALSE(r.params.skip_special_tokens) << "hermes markers may be special tokens";
  body["tool_choice"] = "none";
  EXPECT_TRUE(parse_chat_request(body, context).params.skip_special_tokens);
}

}  // namespace
}  // namespace relayllm
