// Token selection for one request at one position: penalties, min_tokens masking, temperature,
// top-k, top-p, min-p and a seeded draw, in vLLM's order and with vLLM's meaning. Logprobs
// reported to the user are of the raw model distribution (vLLM's "raw_logprobs" default).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "relayllm/engine/sampling_params.h"

namespace relayllm {

struct TokenLogprobs {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;  // (token, logprob), best first
};

// Per-request random stream (xoshiro256**, seeded through splitmix64). Each request owns one so
// that a seeded request draws the same numbers whatever else is in the batch.
class RequestRng {
 public:
  explicit RequestRng(uint64_t seed);

  // The request's seed when it has one, else the engine-provided seed.
  static RequestRng for_request(const SamplingParams& params, uint64_t engine_seed) {
    return RequestRng(params.seed.value_or(engine_seed));
  }

  uint64_t next_u64();
  double uniform();  // [0, 1), 53 random bits

 private:
  uint64_t s_[4];
};

struct SampleInput {
  std::span<const float> logits;  // raw model logits, one per vocab entry
  const SamplingParams* params = nullptr;
  std::span<const int32_t> prompt_ids;  // repetition penalty
  std::span<const int32_t> output_ids;  // all penalties, min_tokens
  // Masked (with params->stop_token_ids) while output_ids.size() < params->min_tokens.
  std::span<const int32_t> eos_token_ids;
  // Grammar mask (bit id%32 of word id/32 set: allowed); empty: no grammar.
  std::span<const int32_t> token_bitmask;
  // Ids blocked at this position (bad words whose other tokens the output ends with).
  std::span<const int32_t> banned_ids;
};

struct SampleOutput {
  int32_t token = 0;
  std::optional<TokenLogprobs> logprobs;  // set when params->logprobs is set
};

// Picks the next token. Restrictions come first (allowed_token_ids, banned ids, the grammar
// mask, logit_bias), then penalties, min_tokens, temperature and the filters. min_tokens does
// not block the stop tokens when the restrictions leave nothing else (a finished grammar).
// `scratch` is reusable workspace owned by the caller (one per thread); its contents between calls
// are meaningless. Throws Error on NaN logits, out-of-vocab ids, or when masking leaves no token
// with nonzero probability.
SampleOutput sample_token(const SampleInput& in, RequestRng& rng, std::vector<float>& scratch);

// out[i] = logits[i] - logsumexp(logits), max-subtracted; -inf logits give -inf.
// out.size() must equal logits.size().
void log_softmax(std::span<const float> logits, std::span<float> out);

// The k (0..20) largest entries of a logprob row, best first, ties broken by the lower id, plus
// `token`'s own logprob. Runs in one pass over the row without sorting it.
TokenLogprobs top_logprobs(std::span<const float> logprob_row, int32_t token, int32_t k);

}  // namespace relayllm
