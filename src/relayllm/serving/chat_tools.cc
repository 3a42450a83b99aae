#include "relayllm/serving/chat_tools.h"

#include <cctype>
#include <utility>
#include <vector>

#include "relayllm/common/error.h"
#include "relayllm/common/json_fields.h"
#include "relayllm/structured/schema_keywords.h"

namespace relayllm {
namespace {

using ojson = nlohmann::ordered_json;

constexpr int kMaxArgumentsDepth = 64;

std::string what(const ojson& value) { return json_fields::describe_value(nlohmann::json(value)); }

const ojson* find(const ojson& object, const char* key) {
  auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

// OpenAI's rule for function names: letters, digits, '_' and '-', at most 64.
bool valid_function_name(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  return true;
}

void check_tool(const ojson& tool, size_t i) {
  if (!tool.is_object()) fail("field 'tools[{}]' must be an object, got {}", i, what(tool));
  const ojson* type = find(tool, "type");
  if (!type || *type != "function")
    fail("field 'tools[{}].type' must be \"function\" (the only tool type), got {}", i,
         type ? what(*type) : "nothing");
  const ojson* function = find(tool, "function");
  if (!function || !function->is_object())
    fail("field 'tools[{}].function' must be an object, got {}", i,
         function ? what(*function) : "nothing");
  const ojson* name = find(*function, "name");
  if (!name || !name->is_string())
    fail("field 'tools[{}].function.name' must be a string, got {}", i,
         name ? what(*name) : "nothing");
  if (!valid_function_name(name->get<std::string>()))
    fail(
        "field 'tools[{}].function.name' must be 1 to 64 letters, digits, '_' or '-', got "
        "{}",
        i, what(*name));
  const ojson* description = find(*function, "description");
  if (description && !description->is_string())
    fail("field 'tools[{}].function.description' must be a string, got {}", i, what(*description));
  const ojson* parameters = find(*function, "parameters");
  if (parameters && !parameters->is_object())
    fail("field 'tools[{}].function.parameters' must be an object (a JSON schema), got {}", i,
         what(*parameters));
  const ojson* strict = find(*function, "strict");
  if (strict && !strict->is_boolean())
    fail("field 'tools[{}].function.strict' must be a boolean, got {}", i, what(*strict));
}

// Arguments arrive as text the body's depth limit never saw; templates walk them.
bool deeper_than(const ojson& value, int limit) {
  std::vector<std::pair<const ojson*, int>> pending = {{&value, 1}};
  while (!pending.empty()) {
    auto [v, depth] = pending.back();
    pending.pop_back();
    if (depth > limit) return true;
    if (v->is_structured())
      for (const auto& child : *v) pending.push_back({&child, depth + 1});
  }
  return false;
}

bool has_tool(const ojson& tools, const std::string& name) {
  for (const ojson& tool : tools)
    if (tool["function"]["name"] == name) return true;
  return false;
}

void read_tool_choice(const ojson& value, ToolRequest& r) {
  if (value.is_string()) {
    std::string choice = value.get<std::string>();
    if (choice == "none")
      r.choice = ToolChoice::kNone;
    else if (choice == "auto")
      r.choice = ToolChoice::kAuto;
    else if (choice == "required")
      r.choice = ToolChoice::kRequired;
    else
      fail(
          "field 'tool_choice' must be \"none\", \"auto\", \"required\" or {{\"type\": "
          "\"function\", \"function\": {{\"name\": ...}}}}, got {}",
          what(value));
    return;
  }
  if (!value.is_object())
    fail("field 'tool_choice' must be a string or an object, got {}", what(value));
  const ojson* type = find(value, "type");
  if (!type || *type != "function")
    fail("field 'tool_choice.type' must be \"function\", got {}", type ? what(*type) : "nothing");
  const ojson* function = find(value, "function");
  const ojson* name = function && function->is_object() ? find(*function, "name") : nullptr;
  if (!name || !name->is_string())
    fail("field 'tool_choice.function.name' must be a string, got {}",
         name ? what(*name) : "nothing");
  r.choice = ToolChoice::kNamed;
  r.function_name = name->get<std::string>();
}

}  // namespace

ToolRequest read_tool_request(const ojson& body, const ToolSettings& settings) {
  ToolRequest r;
  const ojson* tools = find(body, "tools");
  if (tools) {
    if (!tools->is_array()) fail("field 'tools' must be a list of tools, got {}", what(*tools));
    for (size_t i = 0; i < tools->size(); ++i) {
      check_tool((*tools)[i], i);
      for (size_t k = 0; k < i; ++k)
        if ((*tools)[k]["function"]["name"] == (*tools)[i]["function"]["name"])
          fail("field 'tools[{}].function.name': '{}' is already the name of tools[{}]", i,
               (*tools)[i]["function"]["name"].get<std::string>(), k);
    }
    if (!tools->empty()) r.tools = *tools;
  }
  const ojson* choice = find(body, "tool_choice");
  if (choice) {
    read_tool_choice(*choice, r);
    if (r.choice != ToolChoice::kNone && r.tools.is_null())
      fail("field 'tool_choice': when using tool_choice, 'tools' must be set (a non-empty list)");
  } else if (!r.tools.is_null()) {
    r.choice = ToolChoice::kAuto;  // OpenAI's default when tools are given
  }
  if (r.choice == ToolChoice::kNamed && !has_tool(r.tools, r.function_name))
    fail("field 'tool_choice.function.name': tool '{}' was not passed in 'tools'", r.function_name);
  if (r.choice == ToolChoice::kAuto &&
      (!settings.enable_auto_tool_choice || settings.parser.empty()))
    fail(
        "field 'tool_choice': \"auto\" tool choice requires --enable-auto-tool-choice and "
        "--tool-call-parser to be set");
  // A required or named call is held to its tools' parameter schemas by a grammar: a keyword
  // the grammar would skip is refused here, named by the tool it belongs to.
  if (r.choice == ToolChoice::kRequired || r.choice == ToolChoice::kNamed) {
    for (size_t i = 0; i < r.tools.size(); ++i) {
      const ojson& function = r.tools[i]["function"];
      if (r.choice == ToolChoice::kNamed && function["name"] != r.function_name) continue;
      const ojson* parameters = find(function, "parameters");
      if (parameters && parameters->is_object())
        structured::check_schema_keywords(nlohmann::json(*parameters),
                                          fmt::format("tools[{}].function.parameters", i));
    }
  }
  if (const ojson* parallel = find(body, "parallel_tool_calls")) {
    if (!parallel->is_boolean())
      fail("field 'parallel_tool_calls' must be a boolean, got {}", what(*parallel));
    r.parallel = parallel->get<bool>();
  }
  return r;
}

std::unique_ptr<ToolCallFormat> ToolRequest::format(const ToolSettings& settings) const {
  switch (choice) {
    case ToolChoice::kNone:
      return nullptr;
    case ToolChoice::kAuto:
      return make_tool_call_format(settings.parser);
    case ToolChoice::kRequired:
      return make_required_calls_format();
    case ToolChoice::kNamed:
      return make_named_call_format(function_name);
  }
  return nullptr;
}

ojson ToolRequest::constraint_schema() const {
  auto parameters_of = [](const ojson& tool) {
    const ojson& function = tool["function"];
    auto it = function.find("parameters");
    return it == function.end() || it->is_null() ? ojson{{"type", "object"}} : *it;
  };
  if (choice == ToolChoice::kNamed) {
    for (const ojson& tool : tools)
      if (tool["function"]["name"] == function_name) return parameters_of(tool);
  }
  if (choice != ToolChoice::kRequired) return nullptr;
  // vLLM's shape: a list of {"name": one tool's name, "parameters": its schema}.
  ojson any_of = ojson::array();
  for (const ojson& tool : tools)
    any_of.push_back({{"type", "object"},
                      {"properties",
                       {{"name", {{"type", "string"}, {"enum", {tool["function"]["name"]}}}},
                        {"parameters", parameters_of(tool)}}},
                      {"required", {"name", "parameters"}}});
  ojson schema = {
      {"type", "array"}, {"minItems", 1}, {"items", {{"type", "object"}, {"anyOf", any_of}}}};
  if (!parallel) schema["maxItems"] = 1;
  return schema;
}

void prepare_tool_messages(ojson& messages) {
  for (size_t i = 0; i < messages.size(); ++i) {
    ojson& m = messages[i];
    const std::string role = m["role"].get<std::string>();
    if (role == "tool") {
      const ojson* id = find(m, "tool_call_id");
      if (id && !id->is_string())
        fail("field 'messages[{}].tool_call_id' must be a string, got {}", i, what(*id));
    }
    auto calls_it = m.find("tool_calls");
    if (calls_it == m.end()) continue;
    if (calls_it->is_null()) {
      m.erase("tool_calls");
      continue;
    }
    if (role != "assistant")
      fail("field 'messages[{}].tool_calls': only assistant messages carry tool calls", i);
    ojson& calls = *calls_it;
    if (!calls.is_array())
      fail("field 'messages[{}].tool_calls' must be a list, got {}", i, what(calls));
    for (size_t k = 0; k < calls.size(); ++k) {
      ojson& call = calls[k];
      const std::string field = fmt::format("messages[{}].tool_calls[{}]", i, k);
      if (!call.is_object()) fail("field '{}' must be an object, got {}", field, what(call));
      const ojson* id = find(call, "id");
      if (id && !id->is_string()) fail("field '{}.id' must be a string, got {}", field, what(*id));
      auto function = call.find("function");
      if (function == call.end() || !function->is_object())
        fail("field '{}.function' must be an object with name and arguments", field);
      const ojson* name = find(*function, "name");
      if (!name || !name->is_string())
        fail("field '{}.function.name' must be a string, got {}", field,
             name ? what(*name) : "nothing");
      auto arguments = function->find("arguments");
      if (arguments == function->end() || arguments->is_null()) {
        (*function)["arguments"] = ojson::object();
      } else if (arguments->is_string()) {
        ojson parsed = ojson::parse(arguments->get<std::string>(), nullptr, false);
        if (parsed.is_discarded())
          fail("field '{}.function.arguments' is not valid JSON: {}", field, what(*arguments));
        if (deeper_than(parsed, kMaxArgumentsDepth))
          fail("field '{}.function.arguments' nests deeper than {} levels", field,
               kMaxArgumentsDepth);
        *arguments = std::move(parsed);
      } else if (!arguments->is_object()) {
        fail("field '{}.function.arguments' must be a JSON string or an object, got {}", field,
             what(*arguments));
      }
    }
  }
}

}  // namespace relayllm
