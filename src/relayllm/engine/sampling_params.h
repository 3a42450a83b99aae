// Per-request sampling settings, named and bounded like vLLM's SamplingParams so that
// requests written for vLLM mean the same thing here.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "relayllm/structured/grammar_compiler.h"

namespace relayllm {

// The most top logprobs a request may ask for per position (vLLM's default cap).
inline constexpr int32_t kMaxLogprobs = 20;

struct SamplingParams {
  int32_t max_tokens = 16;
  int32_t min_tokens = 0;    // EOS and stop_token_ids are masked until this many tokens exist
  float temperature = 1.0f;  // < 1e-5 means greedy
  float top_p = 1.0f;
  int32_t top_k = -1;  // -1 or 0 = off
  float min_p = 0.0f;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;  // EOS does not end the request (it is still masked under min_tokens)
  bool include_stop_str_in_output = false;
  std::optional<int32_t> logprobs;         // top entries per generated token; 0 = chosen token only
  std::optional<int32_t> prompt_logprobs;  // same, for each prompt position
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  bool skip_special_tokens = true;
  // Added to the logits before sampling: (token id, bias in [-100, 100]) (OpenAI's logit_bias).
  std::vector<std::pair<int32_t, float>> logit_bias;
  // When set, only these ids can be sampled (vLLM's allowed_token_ids).
  std::optional<std::vector<int32_t>> allowed_token_ids;
  // Token sequences that must not be generated: the last id of each is blocked wherever the
  // output ends with the ones before it (vLLM's bad_words, tokenized by the request parser).
  std::vector<std::vector<int32_t>> bad_words_ids;
  // The grammar the output must follow (JSON schema, regex, choice, EBNF, structural tag),
  // compiled by the request parser; null: free text. The request ends with "stop" once the
  // grammar is complete and a stop token is sampled.
  std::shared_ptr<const structured::CompiledConstraint> constraint;

  // Throws Error naming the first bad field and its value.
  void validate() const;

  bool greedy() const { return temperature < kGreedyTemperature; }
  bool top_k_enabled() const { return top_k > 0; }

  // Below this a temperature division would overflow the logits; vLLM treats it as greedy too.
  static constexpr float kGreedyTemperature = 1e-5f;
};

// The field names of a request body: completions (vLLM's SamplingParams names) or chat
// completions (logprobs a switch with top_logprobs the count, max_completion_tokens).
enum class SamplingDialect { kCompletions, kChat };

// Reads the vLLM-named fields of a JSON object over `defaults`, then validates the result:
// the one place requests' sampling parameters are read and validated.
// Unknown keys are ignored (the caller owns the rest of a request body); a null value keeps the
// default, except that null clears the optional fields (seed, logprobs, prompt_logprobs).
// `stop` may be a string or a list of strings. Wrong types throw Error naming the field:
// "field 'top_p' must be a number, got string".
SamplingParams sampling_params_from_json(const nlohmann::json& j, const SamplingParams& defaults,
                                         SamplingDialect dialect = SamplingDialect::kCompletions);

}  // namespace relayllm
