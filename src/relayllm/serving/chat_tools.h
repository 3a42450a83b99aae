// Tool calling in chat requests, as the OpenAI API and vLLM 0.9.1 take it: the
// `tools` (function tools, validated), `tool_choice` (none, auto, required, or a named
// function), `parallel_tool_calls`; assistant messages with `tool_calls` and `tool`
// messages in the history; and which tool-call format a request's output is read in.
// Values keep the client's key order: templates print them with tojson.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "relayllm/tools/tool_call_parser.h"

namespace relayllm {

// The server's tool settings (vLLM's --tool-call-parser and --enable-auto-tool-choice).
struct ToolSettings {
  std::string parser;  // empty: none
  bool enable_auto_tool_choice = false;
};

enum class ToolChoice { kNone, kAuto, kRequired, kNamed };

struct ToolRequest {
  nlohmann::ordered_json tools;  // the request's tools (null: none), as the template gets them
  ToolChoice choice = ToolChoice::kNone;
  std::string function_name;  // kNamed
  bool parallel = true;       // parallel_tool_calls

  // Whether the output is read for tool calls.
  bool parses_calls() const { return choice != ToolChoice::kNone; }
  // The format the output is read in (null when parses_calls() is false).
  std::unique_ptr<ToolCallFormat> format(const ToolSettings& settings) const;
  // What vLLM constrains the output to for "required" and a named function (a JSON
  // schema); null for none and auto.
  nlohmann::ordered_json constraint_schema() const;
};

// Reads and checks tools, tool_choice and parallel_tool_calls; Error naming the field.
ToolRequest read_tool_request(const nlohmann::ordered_json& body, const ToolSettings& settings);

// Checks the tool parts of normalized messages (assistant tool_calls, tool messages) and
// turns tool-call arguments given as JSON text into objects, as templates expect them
// (what transformers documents and vLLM does).
void prepare_tool_messages(nlohmann::ordered_json& messages);

}  // namespace relayllm
