#include "relayllm/serving/request_parser.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "relayllm/common/error.h"
#include "relayllm/common/json_fields.h"
#include "relayllm/serving/request_fields.h"
#include "relayllm/serving/structured_output.h"

namespace relayllm {
namespace {

int32_t read_n(const nlohmann::json& body, int32_t max_n) {
  int64_t n = json_fields::get_int(body, "n").value_or(1);
  if (n < 1) fail("field 'n' must be >= 1, got {}", n);
  if (n > max_n) fail("field 'n' must be <= {}, got {}", max_n, n);
  return int32_t(n);
}

// stream_options of a streamed request: include_usage, and continuous_usage_stats
// (per-chunk usage, only together with the final usage chunk, as vLLM).
void read_stream_options(const nlohmann::json& body, OutputOptions& output) {
  auto it = body.find("stream_options");
  if (!output.stream || it == body.end() || it->is_null()) return;
  if (!it->is_object()) fail("field 'stream_options' must be an object, got {}", it->type_name());
  output.include_usage = json_fields::get_bool(*it, "include_usage").value_or(false);
  output.continuous_usage =
      output.include_usage && json_fields::get_bool(*it, "continuous_usage_stats").value_or(false);
}

// The fields every request shares: n, streaming, the relay prefix.
void read_common(const nlohmann::json& body, const RequestContext& context, ParsedRequest& r) {
  r.n = read_n(body, context.max_n);
  r.request_id = json_fields::get_string(body, "request_id").value_or("");
  r.output.stream = json_fields::get_bool(body, "stream").value_or(false);
  read_stream_options(body, r.output);
  r.relay_prefix = json_fields::get_string(body, "relay_prefix").value_or("");
  if (!r.relay_prefix.empty() && !context.relay_enabled)
    fail("relay_prefix '{}' given but relay attention is off (--enable-relay-attention)",
         r.relay_prefix);
}

// Caps or checks max_tokens against the context left after the prompt.
void fit_max_tokens(SamplingParams& params, size_t prompt_len, int32_t max_model_len,
                    bool explicit_max, bool default_to_rest) {
  const int64_t p = int64_t(prompt_len);
  if (p >= max_model_len)
    fail("the prompt has {} tokens but this model's maximum context length is {} tokens", p,
         max_model_len);
  int64_t room = max_model_len - p;
  if (explicit_max) {
    if (params.max_tokens > room)
      fail(
          "this model's maximum context length is {} tokens, but {} tokens were requested "
          "({} in the prompt, {} for the completion)",
          max_model_len, p + params.max_tokens, p, params.max_tokens);
  } else {
    params.max_tokens =
        default_to_rest ? int32_t(room) : int32_t(std::min<int64_t>(params.max_tokens, room));
    params.min_tokens = std::min(params.min_tokens, params.max_tokens);
  }
}

// The rendered system message, as a prefix of the prompt's tokens: with relay on it
// becomes a shared prefix when it is both a text prefix and a token prefix of the
// whole prompt (so attaching to it never changes the tokens the request sees).
int32_t system_prefix_len(const RequestContext& context, const nlohmann::ordered_json& messages,
                          const std::string& text, const std::vector<int32_t>& ids,
                          const nlohmann::json& kwargs, const nlohmann::ordered_json& tools) {
  if (messages[0]["role"] != "system" || messages.size() < 2) return 0;
  try {
    // With the tools: templates that print them in the system part (Hermes, Qwen) make
    // them part of the shared prefix.
    std::string system_text =
        render_chat(context, nlohmann::ordered_json::array({messages[0]}), false, kwargs, tools);
    if (system_text.empty() || text.compare(0, system_text.size(), system_text) != 0) return 0;
    std::vector<int32_t> sys_ids = context.tokenizer->encode(system_text, false);
    if (sys_ids.size() < ids.size() && std::equal(sys_ids.begin(), sys_ids.end(), ids.begin()))
      return int32_t(sys_ids.size());
  } catch (const std::exception& e) {
    spdlog::debug("chat system part not usable as a relay prefix: {}", e.what());
  }
  return 0;
}

}  // namespace

std::vector<int32_t> read_token_ids(const nlohmann::json& value, const std::string& field,
                                    int32_t vocab_size) {
  if (!value.is_array())
    fail("field '{}' must be a list of token ids, got {}", field, value.type_name());
  std::vector<int32_t> ids;
  ids.reserve(value.size());
  for (size_t i = 0; i < value.size(); ++i) {
    const auto& v = value[i];
    if (!v.is_number_integer())
      fail("field '{}[{}]' must be an integer token id, got {}", field, i, v.type_name());
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX))
      fail("field '{}[{}]': token id {} is outside the vocabulary (size {})", field, i,
           v.get<uint64_t>(), vocab_size);
    int64_t id = v.get<int64_t>();
    if (id < 0 || id >= vocab_size)
      fail("field '{}[{}]': token id {} is outside the vocabulary (size {})", field, i, id,
           vocab_size);
    ids.push_back(int32_t(id));
  }
  return ids;
}

std::vector<GenerationRequest> ParsedRequest::engine_requests(int32_t max_model_len) const {
  std::vector<GenerationRequest> out;
  for (const PromptInput& prompt : prompts) {
    SamplingParams fitted = params;
    fit_max_tokens(fitted, prompt.ids.size(), max_model_len, explicit_max_tokens, chat);
    for (int32_t k = 0; k < n; ++k) {
      GenerationRequest r;
      r.prompt_ids = prompt.ids;
      r.params = fitted;
      if (fitted.seed) r.params.seed = *fitted.seed + uint64_t(k);
      r.relay_prefix = relay_prefix;
      r.auto_prefix_len = auto_prefix_len;
      out.push_back(std::move(r));
    }
  }
  return out;
}

ParsedRequest parse_completion_request(const nlohmann::json& body, const RequestContext& context) {
  const Tokenizer& tokenizer = *context.tokenizer;
  check_request_fields(body, RequestApi::kCompletions);
  ParsedRequest r;
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) fail("field 'prompt' is required");
  const nlohmann::json& prompt = *it;
  bool add_special = json_fields::get_bool(body, "add_special_tokens").value_or(true);
  auto text_prompt = [&](const std::string& text) {
    if (text.empty()) fail("field 'prompt' must not be an empty string");
    std::vector<int32_t> ids = tokenizer.encode(text, add_special);
    r.prompts.push_back({std::move(ids), text});
  };
  auto id_prompt = [&](const nlohmann::json& ids, const std::string& field) {
    std::vector<int32_t> out = read_token_ids(ids, field, context.vocab_size);
    if (out.empty()) fail("field '{}' must not be an empty list", field);
    std::string text = tokenizer.decode(out, false);
    r.prompts.push_back({std::move(out), std::move(text)});
  };
  if (prompt.is_string()) {
    text_prompt(prompt.get<std::string>());
  } else if (prompt.is_array() && !prompt.empty() && prompt[0].is_number_integer()) {
    id_prompt(prompt, "prompt");
  } else if (prompt.is_array() && !prompt.empty()) {
    for (size_t i = 0; i < prompt.size(); ++i) {
      if (prompt[i].is_string())
        text_prompt(prompt[i].get<std::string>());
      else if (prompt[i].is_array())
        id_prompt(prompt[i], fmt::format("prompt[{}]", i));
      else
        fail("field 'prompt[{}]' must be a string or a list of token ids, got {}", i,
             prompt[i].type_name());
    }
  } else {
    fail(
        "field 'prompt' must be a non-empty string, list of strings, list of token ids "
        "or list of token-id lists");
  }

  read_common(body, context, r);
  r.output.echo = json_fields::get_bool(body, "echo").value_or(false);
  r.params = sampling_params_from_json(body, context.defaults);
  read_structured_output(body, tokenizer, context.grammar_compiler, r.params);
  r.explicit_max_tokens = body.contains("max_tokens") && !body["max_tokens"].is_null();
  r.output.logprobs = r.params.logprobs.has_value();
  r.output.top_logprobs = r.params.logprobs.value_or(0);
  r.output.prompt_logprobs = r.params.prompt_logprobs.has_value();
  // Echo with logprobs scores the prompt's tokens too.
  if (r.output.echo && r.params.logprobs && !r.params.prompt_logprobs)
    r.params.prompt_logprobs = r.params.logprobs;
  return r;
}

ParsedRequest parse_chat_request(const nlohmann::ordered_json& ordered_body,
                                 const RequestContext& context) {
  const nlohmann::json body(ordered_body);  // typed field reads
  check_request_fields(body, RequestApi::kChat);
  if (!body.contains("messages")) fail("field 'messages' is required");
  nlohmann::ordered_json messages = normalize_messages(ordered_body["messages"]);
  prepare_tool_messages(messages);
  ToolRequest tools = read_tool_request(ordered_body, context.tools);
  bool add_generation_prompt = json_fields::get_bool(body, "add_generation_prompt").value_or(true);
  nlohmann::json kwargs =
      body.contains("chat_template_kwargs") && !body["chat_template_kwargs"].is_null()
          ? body["chat_template_kwargs"]
          : nlohmann::json::object();
  // vLLM passes documents to the template beside the messages (RAG templates).
  if (body.contains("documents") && !body["documents"].is_null())
    kwargs["documents"] = body["documents"];
  std::string text = render_chat(context, messages, add_generation_prompt, kwargs, tools.tools);
  // The template writes the special tokens; vLLM's chat default adds none.
  std::vector<int32_t> ids = context.tokenizer->encode(
      text, json_fields::get_bool(body, "add_special_tokens").value_or(false));
  if (ids.empty()) fail("the rendered conversation is empty");

  ParsedRequest r;
  r.chat = true;
  read_common(body, context, r);
  r.params = sampling_params_from_json(body, context.defaults, SamplingDialect::kChat);
  read_structured_output(body, *context.tokenizer, context.grammar_compiler, r.params);
  // "required" and a named function: the output is held to the call shape by a grammar (the
  // schema vLLM uses), so any model returns a valid call.
  if (nlohmann::ordered_json schema = tools.constraint_schema(); !schema.is_null()) {
    if (r.params.constraint)
      fail(
          "field 'tool_choice': \"required\" or a named function constrains the output itself "
          "and cannot be combined with response_format or guided_* fields");
    structured::ConstraintSpec spec;
    spec.kind = structured::ConstraintKind::kJsonSchema;
    spec.text = schema.dump();
    spec.field = "tool_choice";
    r.params.constraint = compile_constraint(spec, context.grammar_compiler);
  }
  r.explicit_max_tokens = json_fields::get_int(body, "max_completion_tokens").has_value() ||
                          json_fields::get_int(body, "max_tokens").has_value();
  r.output.logprobs = json_fields::get_bool(body, "logprobs").value_or(false);
  r.output.top_logprobs = int32_t(json_fields::get_int(body, "top_logprobs").value_or(0));
  r.output.prompt_logprobs = r.params.prompt_logprobs.has_value();
  if (context.relay_enabled && r.relay_prefix.empty() && !r.params.prompt_logprobs)
    r.auto_prefix_len = system_prefix_len(context, messages, text, ids, kwargs, tools.tools);
  // Formats whose call markers are special tokens need them in the text (as vLLM's
  // parsers for them ask).
  if (auto format = tools.format(context.tools); format && format->keeps_special_tokens())
    r.params.skip_special_tokens = false;
  r.tools = std::move(tools);
  r.prompts.push_back({std::move(ids), std::move(text)});
  return r;
}

ParsedRequest parse_chat_request(const nlohmann::json& body, const RequestContext& context) {
  return parse_chat_request(nlohmann::ordered_json(body), context);
}

GenerationRequest parse_generation_request(std::vector<int32_t> prompt_ids,
                                           const nlohmann::json& fields,
                                           const SamplingParams& defaults,
                                           const RequestContext* context) {
  GenerationRequest r;
  r.prompt_ids = std::move(prompt_ids);
  r.params = sampling_params_from_json(fields, defaults);
  if (context)
    read_structured_output(fields, *context->tokenizer, context->grammar_compiler, r.params);
  r.relay_prefix = json_fields::get_string(fields, "relay_prefix").value_or("");
  return r;
}

namespace {

template <class Json>
Json normalize_messages_as(const Json& messages) {
  if (!messages.is_array()) fail("field 'messages' must be a list, got {}", messages.type_name());
  if (messages.empty()) fail("field 'messages' must not be empty");
  Json out = Json::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    if (!m.is_object()) fail("messages[{}] must be an object, got {}", i, m.type_name());
    auto role_it = m.find("role");
    if (role_it == m.end() || !role_it->is_string()) fail("messages[{}].role must be a string", i);
    std::string role = role_it->template get<std::string>();
    if (role != "system" && role != "user" && role != "assistant" && role != "tool" &&
        role != "developer")
      fail("messages[{}].role '{}' is not one of system, user, assistant, tool, developer", i,
           role);
    Json normalized = m;
    auto content_it = m.find("content");
    if (content_it == m.end() || content_it->is_null()) {
      normalized["content"] = "";
    } else if (content_it->is_array()) {
      // Text parts are joined with newlines, as vLLM does for templates that expect strings.
      std::string text;
      for (size_t k = 0; k < content_it->size(); ++k) {
        const auto& part = (*content_it)[k];
        if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
            !part.contains("text") || !part["text"].is_string())
          fail("messages[{}].content[{}] must be a {{\"type\": \"text\", \"text\": ...}} part", i,
               k);
        if (k) text += "\n";
        text += part["text"].template get<std::string>();
      }
      normalized["content"] = text;
    } else if (!content_it->is_string()) {
      fail("messages[{}].content must be a string or a list of text parts, got {}", i,
           content_it->type_name());
    }
    out.push_back(std::move(normalized));
  }
  return out;
}

}  // namespace

nlohmann::json normalize_messages(const nlohmann::json& messages) {
  return normalize_messages_as(messages);
}

nlohmann::ordered_json normalize_messages(const nlohmann::ordered_json& messages) {
  return normalize_messages_as(messages);
}

std::string render_chat(const RequestContext& context, const nlohmann::ordered_json& messages,
                        bool add_generation_prompt, const nlohmann::json& kwargs,
                        const nlohmann::ordered_json& tools) {
  if (!context.chat_template)
    fail(
        "this model has no usable chat template ({}); start the server with "
        "--chat-template FILE",
        context.chat_template_error);
  if (!kwargs.is_object())
    fail("field 'chat_template_kwargs' must be an object, got {}", kwargs.type_name());
  ChatTemplateOptions options;
  options.add_generation_prompt = add_generation_prompt;
  options.bos_token = context.tokenizer->bos_token();
  options.eos_token = context.tokenizer->eos_token();
  if (!tools.is_null()) options.extra["tools"] = tools;
  for (const auto& [key, value] : kwargs.items()) options.extra[key] = value;
  try {
    return context.chat_template->render(messages, options);
  } catch (const Error& e) {
    fail("chat template: {}", e.what());
  }
}

}  // namespace relayllm
