// Pieces of the OpenAI API's JSON shapes (as vLLM serves them): error bodies and the
// logprobs layouts of completions and chat completions. Requests are read by
// serving/request_parser.h, typed fields with common/json_fields.h (Error answers 400).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "relayllm/engine/sampler.h"
#include "relayllm/tokenizer/tokenizer.h"

namespace relayllm {

// {"error": {"message", "type", "code"}} with the HTTP status as code.
nlohmann::json error_body(int status, const std::string& message);

// The text of one token as the API shows it (its own decode, special tokens kept).
std::string token_text(const Tokenizer& tokenizer, int32_t id);

// Completions' logprobs object: parallel lists tokens / token_logprobs /
// top_logprobs / text_offset. Entries are appended in order; offsets run on
// from `start_offset` (bytes of text before the first token).
class CompletionLogprobs {
 public:
  explicit CompletionLogprobs(size_t start_offset = 0) : offset_(start_offset) {}
  // A token without a logprob (the first prompt token under echo).
  void add_unscored(const Tokenizer& tokenizer, int32_t token);
  void add(const Tokenizer& tokenizer, const TokenLogprobs& entry);
  nlohmann::json to_json() const;
  size_t offset() const { return offset_; }
  bool empty() const { return tokens_.empty(); }

 private:
  size_t offset_;
  nlohmann::json tokens_ = nlohmann::json::array(), token_logprobs_ = nlohmann::json::array(),
                 top_logprobs_ = nlohmann::json::array(), text_offset_ = nlohmann::json::array();
};

// One entry of a chat choice's logprobs.content list.
nlohmann::json chat_logprob_entry(const Tokenizer& tokenizer, const TokenLogprobs& entry,
                                  int32_t top_logprobs);

// vLLM's prompt_logprobs list: null for the first token, then {id: {logprob, rank?,
// decoded_token}}.
nlohmann::json prompt_logprobs_json(const Tokenizer& tokenizer,
                                    const std::vector<std::optional<TokenLogprobs>>& entries);

}  // namespace relayllm
