// The one parse of a request into what the engine runs: the prompt (text, token
// ids, or chat messages rendered by the chat template), the sampling parameters
// (read and validated once, by sampling_params_from_json), the relay prefix and
// the output options. Completions, chat completions and the CLI's JSONL lines all
// go through it; the HTTP layer only adds statuses and the response shapes.
// Errors are Error with one line naming the field (the server answers 400).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "relayllm/chat/chat_template.h"
#include "relayllm/engine/sampling_params.h"
#include "relayllm/serving/chat_tools.h"
#include "relayllm/structured/grammar_compiler.h"
#include "relayllm/tokenizer/tokenizer.h"

namespace relayllm {

// A request as the engine takes it (Engine::add_request), one per choice.
struct GenerationRequest {
  std::vector<int32_t> prompt_ids;
  SamplingParams params;
  // The request attaches to this registered prefix, which its prompt must start with
  // token-exactly (an error otherwise); empty: the longest matching one.
  std::string relay_prefix;
  // Chat: the rendered system part is prompt_ids[0, len), a candidate automatic prefix.
  int32_t auto_prefix_len = 0;
};

struct PromptInput {
  std::vector<int32_t> ids;
  std::string text;  // for echo
};

// How the answer is shaped (the HTTP layer's business; parsed here with the rest).
struct OutputOptions {
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  // Usage in every chunk (stream_options.continuous_usage_stats; as vLLM, only together
  // with include_usage).
  bool continuous_usage = false;
  bool echo = false;  // completions: the prompt before the completion
  bool logprobs = false;
  int32_t top_logprobs = 0;
  bool prompt_logprobs = false;
};

struct ParsedRequest {
  bool chat = false;
  std::vector<PromptInput> prompts;  // completions may batch several; chat has one
  SamplingParams params;
  int32_t n = 1;
  std::string relay_prefix;
  int32_t auto_prefix_len = 0;
  // max_tokens given by the request; otherwise completions cap the default to the
  // context left and chat takes all of it.
  bool explicit_max_tokens = false;
  OutputOptions output;
  ToolRequest tools;  // chat: tools, tool_choice, parallel_tool_calls
  // vLLM's request_id: the response id is built from it when given.
  std::string request_id;

  // The engine requests: n per prompt (seed + k for choice k), max_tokens fitted to the
  // context left after each prompt. Error when a prompt leaves no room.
  std::vector<GenerationRequest> engine_requests(int32_t max_model_len) const;
};

// What parsing needs to know of the engine it is for.
struct RequestContext {
  const Tokenizer* tokenizer = nullptr;
  SamplingParams defaults;
  int32_t vocab_size = 0;
  int32_t max_n = 128;  // most choices per request
  bool relay_enabled = false;
  // Chat: the template, or why there is none.
  const ChatTemplate* chat_template = nullptr;
  std::string chat_template_error;
  ToolSettings tools;  // --tool-call-parser, --enable-auto-tool-choice
  // Compiles the structured-output constraints (response_format, guided_*); null: requests
  // that ask for one are refused.
  structured::GrammarCompiler* grammar_compiler = nullptr;
};

// POST /v1/completions bodies: prompt as a string, token ids, or a list of either.
ParsedRequest parse_completion_request(const nlohmann::json& body, const RequestContext& context);
// POST /v1/chat/completions bodies. The ordered form keeps the client's key order in
// what the template prints (tools, tool-call arguments); the other sorts keys.
ParsedRequest parse_chat_request(const nlohmann::ordered_json& body, const RequestContext& context);
ParsedRequest parse_chat_request(const nlohmann::json& body, const RequestContext& context);
// One CLI JSONL line's fields besides its prompt: sampling over `defaults`, relay_prefix and,
// given a context (tokenizer, grammar compiler), the structured-output fields and bad_words.
GenerationRequest parse_generation_request(std::vector<int32_t> prompt_ids,
                                           const nlohmann::json& fields,
                                           const SamplingParams& defaults,
                                           const RequestContext* context = nullptr);

// A list of integer token ids, each checked against the vocabulary.
std::vector<int32_t> read_token_ids(const nlohmann::json& value, const std::string& field,
                                    int32_t vocab_size);

// Chat messages as a template sees them (text parts joined), and their rendering.
nlohmann::json normalize_messages(const nlohmann::json& messages);
nlohmann::ordered_json normalize_messages(const nlohmann::ordered_json& messages);
// `tools` (null: none) reaches the template as transformers passes it; keys of
// chat_template_kwargs override it, as in vLLM.
std::string render_chat(const RequestContext& context, const nlohmann::ordered_json& messages,
                        bool add_generation_prompt, const nlohmann::json& kwargs,
                        const nlohmann::ordered_json& tools = nullptr);

}  // namespace relayllm
