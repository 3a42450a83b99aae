// One request's state as the engine carries it from arrival to finish.
// Token indices: "all tokens" = prompt + generated; a relay-attached sequence's
// "own" tokens are all tokens from index prefix_len on, and only those live in
// its blocks.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "relayllm/engine/sampler.h"
#include "relayllm/engine/sampling_params.h"
#include "relayllm/engine/stop_checker.h"
#include "relayllm/structured/grammar_matcher.h"
#include "relayllm/tokenizer/tokenizer.h"

namespace relayllm {

struct RelayPrefix;

enum class SequenceStatus { kWaiting, kRunning, kFinished };

using Clock = std::chrono::steady_clock;

// vLLM's prompt_logprobs entry: the prompt token's logprob plus the top-k, or
// nothing for the first prompt token.
using PromptLogprob = std::optional<TokenLogprobs>;

struct Sequence {
  int64_t id = 0;
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> output_ids;
  SamplingParams params;
  RequestRng rng;
  SequenceStatus status = SequenceStatus::kWaiting;

  RelayPrefix* prefix = nullptr;       // attached relay prefix, or none
  int32_t prefix_len = 0;              // tokens covered by the prefix (position offset)
  std::vector<int32_t> blocks;         // own tokens' KV blocks
  int32_t num_computed = 0;            // own tokens whose KV is in the cache
  std::vector<uint64_t> block_hashes;  // chain hashes of own blocks published to the prefix cache
  int32_t num_prefix_cache_hit_tokens = 0;

  std::vector<PromptLogprob> prompt_logprobs;       // filled while prefilling, when asked
  std::vector<TokenLogprobs> logprobs;              // one per generated token, when asked
  std::vector<std::vector<float>> captured_logits;  // sampled rows, when the engine captures them

  // Structured output: the request's place in its grammar and the mask of its next token
  // (filled while the step's forward pass runs), when params.constraint is set.
  std::unique_ptr<structured::GrammarMatcher> grammar;
  std::vector<int32_t> token_bitmask;
  std::string grammar_error;  // a mask that could not be filled: the request ends with "error"

  std::unique_ptr<IncrementalDetokenizer> detokenizer;
  StopChecker stop_checker;
  std::string text;                        // generated text, stop strings applied
  size_t text_emitted = 0;                 // bytes of text already streamed out
  std::string finish_reason;               // "stop", "length", "abort", "error"
  std::string error_message;               // why, when finish_reason is "error"
  std::optional<std::string> stop_reason;  // matched stop string
  int32_t num_preemptions = 0;

  Clock::time_point arrival_time{};
  std::optional<Clock::time_point> first_scheduled_time, first_token_time, finish_time;

  Sequence(int64_t seq_id, std::vector<int32_t> prompt, SamplingParams sampling,
           RequestRng request_rng)
      : id(seq_id),
        prompt_ids(std::move(prompt)),
        params(std::move(sampling)),
        rng(request_rng),
        stop_checker(params) {}

  int32_t total_len() const { return int32_t(prompt_ids.size() + output_ids.size()); }
  int32_t own_len() const { return total_len() - prefix_len; }
  int32_t token_at(int32_t index) const {
    int32_t p = int32_t(prompt_ids.size());
    return index < p ? prompt_ids[index] : output_ids[index - p];
  }
  bool is_prefilling() const { return prefix_len + num_computed < int32_t(prompt_ids.size()); }
  bool wants_prompt_logprobs() const { return params.prompt_logprobs.has_value(); }
  bool finished() const { return status == SequenceStatus::kFinished; }
};

}  // namespace relayllm
