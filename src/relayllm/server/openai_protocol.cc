#include "relayllm/server/openai_protocol.h"

#include <cmath>

#include "relayllm/server/api_error.h"

namespace relayllm {
namespace {

nlohmann::json number_or_null(float value) {
  // JSON has no -inf; OpenAI clients expect a very negative number there.
  if (std::isnan(value)) return nullptr;
  if (std::isinf(value)) return value < 0 ? -9999.0 : 9999.0;
  return value;
}

nlohmann::json bytes_of(const std::string& text) {
  nlohmann::json out = nlohmann::json::array();
  for (unsigned char c : text) out.push_back(int(c));
  return out;
}

}  // namespace

nlohmann::json error_body(int status, const std::string& message) {
  return {{"error",
           {{"message", message},
            {"type", api_error_type(status)},
            {"param", nullptr},
            {"code", status}}}};
}

std::string token_text(const Tokenizer& tokenizer, int32_t id) {
  int32_t ids[1] = {id};
  return tokenizer.decode(ids, false);
}

void CompletionLogprobs::add_unscored(const Tokenizer& tokenizer, int32_t token) {
  std::string text = token_text(tokenizer, token);
  tokens_.push_back(text);
  token_logprobs_.push_back(nullptr);
  top_logprobs_.push_back(nullptr);
  text_offset_.push_back(offset_);
  offset_ += text.size();
}

void CompletionLogprobs::add(const Tokenizer& tokenizer, const TokenLogprobs& entry) {
  std::string text = token_text(tokenizer, entry.token);
  tokens_.push_back(text);
  token_logprobs_.push_back(number_or_null(entry.logprob));
  // vLLM's completions layout: a {token_text: logprob} map holding the top
  // entries and the chosen token.
  nlohmann::json top = nlohmann::json::object();
  for (const auto& [id, lp] : entry.top) top[token_text(tokenizer, id)] = number_or_null(lp);
  top[text] = number_or_null(entry.logprob);
  top_logprobs_.push_back(std::move(top));
  text_offset_.push_back(offset_);
  offset_ += text.size();
}

nlohmann::json CompletionLogprobs::to_json() const {
  return {{"tokens", tokens_},
          {"token_logprobs", token_logprobs_},
          {"top_logprobs", top_logprobs_},
          {"text_offset", text_offset_}};
}

nlohmann::json chat_logprob_entry(const Tokenizer& tokenizer, const TokenLogprobs& entry,
                                  int32_t top_logprobs) {
  std::string text = token_text(tokenizer, entry.token);
  nlohmann::json top = nlohmann::json::array();
  for (size_t i = 0; i < entry.top.size() && int32_t(i) < top_logprobs; ++i) {
    std::string t = token_text(tokenizer, entry.top[i].first);
    top.push_back(
        {{"token", t}, {"logprob", number_or_null(entry.top[i].second)}, {"bytes", bytes_of(t)}});
  }
  return {{"token", text},
          {"logprob", number_or_null(entry.logprob)},
          {"bytes", bytes_of(text)},
          {"top_logprobs", std::move(top)}};
}

nlohmann::json prompt_logprobs_json(const Tokenizer& tokenizer,
                                    const std::vector<std::optional<TokenLogprobs>>& entries) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& entry : entries) {
    if (!entry) {
      out.push_back(nullptr);
      continue;
    }
    nlohmann::json position = nlohmann::json::object();
    int rank = 1;
    for (const auto& [id, lp] : entry->top)
      position[std::to_string(id)] = {{"logprob", number_or_null(lp)},
                                      {"rank", rank++},
                                      {"decoded_token", token_text(tokenizer, id)}};
    if (!position.contains(std::to_string(entry->token)))
      position[std::to_string(entry->token)] = {
          {"logprob", number_or_null(entry->logprob)},
          {"decoded_token", token_text(tokenizer, entry->token)}};
    out.push_back(std::move(position));
  }
  return out;
}

}  // namespace relayllm
