#include "relayllm/serving/request_fields.h"

#include <spdlog/spdlog.h>

#include <functional>
#include <string_view>
#include <unordered_map>

#include "relayllm/common/error.h"

namespace relayllm {
namespace {

using Json = nlohmann::json;

enum class Api { kBoth, kCompletions, kChat };

// A field and whether a given value can be honoured; `reason` is the 400's explanation.
struct FieldRule {
  Api api;
  // Returns true when the value is fine (honoured, or the one value that changes nothing).
  std::function<bool(const Json& value, const Json& body)> ok;
  const char* reason;
};

bool always(const Json&, const Json&) { return true; }
bool is_false(const Json& v, const Json&) { return v.is_boolean() && !v.get<bool>(); }
bool is_true(const Json& v, const Json&) { return v.is_boolean() && v.get<bool>(); }
bool is_zero(const Json& v, const Json&) { return v.is_number() && v.get<double>() == 0.0; }
bool is_one(const Json& v, const Json&) { return v.is_number() && v.get<double>() == 1.0; }
bool empty_string(const Json& v, const Json&) {
  return v.is_string() && v.get<std::string>().empty();
}
bool text_only_modalities(const Json& v, const Json&) {
  if (!v.is_array()) return false;
  for (const Json& m : v)
    if (m != "text") return false;
  return true;
}
// best_of: vLLM samples best_of and returns the n best; equal to n it changes nothing.
bool best_of_is_n(const Json& v, const Json& body) {
  if (!v.is_number_integer()) return false;
  int64_t n = 1;
  if (auto it = body.find("n"); it != body.end() && it->is_number_integer()) n = it->get<int64_t>();
  return v.get<int64_t>() == n;
}

const std::unordered_map<std::string_view, FieldRule>& rules() {
  static const std::unordered_map<std::string_view, FieldRule> table = {
      // Honoured (read by the request parser, the sampling parameters or the server).
      {"model", {Api::kBoth, always, ""}},
      {"prompt", {Api::kCompletions, always, ""}},
      {"messages", {Api::kChat, always, ""}},
      {"n", {Api::kBoth, always, ""}},
      {"stream", {Api::kBoth, always, ""}},
      {"stream_options", {Api::kBoth, always, ""}},
      {"max_tokens", {Api::kBoth, always, ""}},
      {"max_completion_tokens", {Api::kChat, always, ""}},
      {"min_tokens", {Api::kBoth, always, ""}},
      {"temperature", {Api::kBoth, always, ""}},
      {"top_p", {Api::kBoth, always, ""}},
      {"top_k", {Api::kBoth, always, ""}},
      {"min_p", {Api::kBoth, always, ""}},
      {"seed", {Api::kBoth, always, ""}},
      {"stop", {Api::kBoth, always, ""}},
      {"stop_token_ids", {Api::kBoth, always, ""}},
      {"ignore_eos", {Api::kBoth, always, ""}},
      {"include_stop_str_in_output", {Api::kBoth, always, ""}},
      {"logprobs", {Api::kBoth, always, ""}},
      {"top_logprobs", {Api::kChat, always, ""}},
      {"prompt_logprobs", {Api::kBoth, always, ""}},
      {"echo", {Api::kCompletions, always, ""}},
      {"repetition_penalty", {Api::kBoth, always, ""}},
      {"presence_penalty", {Api::kBoth, always, ""}},
      {"frequency_penalty", {Api::kBoth, always, ""}},
      {"skip_special_tokens", {Api::kBoth, always, ""}},
      {"add_special_tokens", {Api::kBoth, always, ""}},
      {"add_generation_prompt", {Api::kChat, always, ""}},
      {"chat_template_kwargs", {Api::kChat, always, ""}},
      {"documents", {Api::kChat, always, ""}},
      {"logit_bias", {Api::kBoth, always, ""}},
      {"allowed_token_ids", {Api::kBoth, always, ""}},
      {"bad_words", {Api::kBoth, always, ""}},
      {"response_format", {Api::kBoth, always, ""}},
      {"guided_json", {Api::kBoth, always, ""}},
      {"guided_regex", {Api::kBoth, always, ""}},
      {"guided_choice", {Api::kBoth, always, ""}},
      {"guided_grammar", {Api::kBoth, always, ""}},
      {"guided_decoding_backend", {Api::kBoth, always, ""}},
      {"guided_whitespace_pattern", {Api::kBoth, always, ""}},  // 400 from the parser
      {"request_id", {Api::kBoth, always, ""}},
      {"relay_prefix", {Api::kBoth, always, ""}},
      // Tool calling belongs to the tool-call parser (chat).
      {"tools", {Api::kChat, always, ""}},
      {"tool_choice", {Api::kChat, always, ""}},
      {"parallel_tool_calls", {Api::kChat, always, ""}},
      // Metadata: cannot change a result.
      {"user", {Api::kBoth, always, ""}},
      {"metadata", {Api::kChat, always, ""}},
      {"store", {Api::kChat, always, ""}},
      {"service_tier", {Api::kChat, always, ""}},
      {"prompt_cache_key", {Api::kChat, always, ""}},
      {"safety_identifier", {Api::kChat, always, ""}},
      // Only their no-op value is accepted.
      {"best_of", {Api::kCompletions, best_of_is_n, "only best_of equal to n is supported"}},
      {"use_beam_search", {Api::kBoth, is_false, "beam search is not supported"}},
      {"length_penalty",
       {Api::kBoth, is_one, "length_penalty applies to beam search, which is not supported"}},
      {"suffix", {Api::kCompletions, empty_string, "suffix (fill-in-the-middle) is not supported"}},
      {"modalities", {Api::kChat, text_only_modalities, "only the text modality is served"}},
      {"priority", {Api::kBoth, is_zero, "priority scheduling is not enabled"}},
      {"continue_final_message", {Api::kChat, is_false, "continue_final_message is not supported"}},
      {"spaces_between_special_tokens",
       {Api::kBoth, is_true, "special tokens are always joined with spaces"}},
      {"return_tokens_as_token_ids",
       {Api::kBoth, is_false, "return_tokens_as_token_ids is not supported"}},
      {"logits_processors",
       {Api::kBoth, [](const Json& v, const Json&) { return v.is_array() && v.empty(); },
        "custom logits processors are not supported"}},
      // Not supported at all.
      {"functions",
       {Api::kChat, nullptr, "the deprecated functions API is not supported; use tools"}},
      {"function_call",
       {Api::kChat, nullptr, "the deprecated functions API is not supported; use tool_choice"}},
      {"audio", {Api::kChat, nullptr, "audio output is not supported"}},
      {"prediction", {Api::kChat, nullptr, "predicted outputs are not supported"}},
      {"reasoning_effort",
       {Api::kChat, nullptr, "reasoning effort is not supported (no reasoning parser)"}},
      {"verbosity", {Api::kChat, nullptr, "verbosity is not supported"}},
      {"web_search_options", {Api::kChat, nullptr, "web search is not supported"}},
      {"chat_template",
       {Api::kChat, nullptr,
        "a per-request chat template is not supported; start the server with --chat-template"}},
      {"truncate_prompt_tokens", {Api::kBoth, nullptr, "prompt truncation is not supported"}},
      {"mm_processor_kwargs", {Api::kChat, nullptr, "multimodal inputs are not supported"}},
      {"prompt_embeds", {Api::kCompletions, nullptr, "prompt embeddings are not supported"}},
      {"cache_salt",
       {Api::kBoth, nullptr, "cache_salt is not supported (the prefix cache is not partitioned)"}},
      {"kv_transfer_params",
       {Api::kBoth, nullptr, "KV transfer (disaggregated prefill) is not supported"}},
      {"structural_tag",
       {Api::kBoth, nullptr,
        "give a structural tag as response_format {\"type\": \"structural_tag\", ...}"}},
  };
  return table;
}

}  // namespace

void check_request_fields(const nlohmann::json& body, RequestApi api) {
  if (!body.is_object()) return;  // the parser names the problem
  const bool chat = api == RequestApi::kChat;
  std::string ignored;
  for (const auto& [key, value] : body.items()) {
    auto it = rules().find(key);
    const bool known = it != rules().end() &&
                       (it->second.api == Api::kBoth || (it->second.api == Api::kChat) == chat);
    if (!known) {
      ignored += (ignored.empty() ? "" : ", ") + key;
      continue;
    }
    if (value.is_null()) continue;  // null is every field's default
    const FieldRule& rule = it->second;
    if (!rule.ok || !rule.ok(value, body))
      fail("field '{}' is not supported: {}", key, rule.reason);
  }
  // vLLM's behaviour for fields of no schema: a log line, no error.
  if (!ignored.empty())
    spdlog::warn("the following fields were present in the request but ignored: {}",
                 ignored.substr(0, 512));
}

}  // namespace relayllm
