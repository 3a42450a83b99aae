#include "relayllm/engine/sampling_params.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "relayllm/common/error.h"
#include "relayllm/common/json_fields.h"

namespace relayllm {

namespace {

void check_finite(const char* field, float v) {
  if (!std::isfinite(v)) fail("field '{}' must be a finite number, got {}", field, v);
}

void check_logprob_count(const char* field, const std::optional<int32_t>& v) {
  if (v && (*v < 0 || *v > kMaxLogprobs)) {
    fail("field '{}' must be in [0, {}], got {}", field, kMaxLogprobs, *v);
  }
}

using json_fields::to_bool;
using json_fields::to_float;
using json_fields::to_int32;

// Seeds are opaque 64-bit values: negative integers (accepted by vLLM) keep their bit pattern.
uint64_t read_seed(const nlohmann::json& v, const char* field) {
  if (!v.is_number_integer())
    fail("field '{}' must be an integer, got {}", field, json_fields::describe_value(v));
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  return uint64_t(v.get<int64_t>());
}

std::vector<std::string> read_stop(const nlohmann::json& v, const char* field) {
  if (v.is_string()) return {v.get<std::string>()};
  if (!v.is_array())
    fail("field '{}' must be a string or a list of strings, got {}", field,
         json_fields::describe_value(v));
  std::vector<std::string> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    out.push_back(json_fields::to_string(v[i], fmt::format("{}[{}]", field, i)));
  return out;
}

std::vector<int32_t> read_int32_list(const nlohmann::json& v, const char* field) {
  if (!v.is_array())
    fail("field '{}' must be a list of integers, got {}", field, json_fields::describe_value(v));
  std::vector<int32_t> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    out.push_back(to_int32(v[i], fmt::format("{}[{}]", field, i)));
  return out;
}

// OpenAI's shape: {"token id as a string": bias}. Ids are checked against the vocabulary
// when the engine takes the request.
std::vector<std::pair<int32_t, float>> read_logit_bias(const nlohmann::json& v) {
  if (!v.is_object())
    fail("field 'logit_bias' must be an object mapping token ids to biases, got {}",
         json_fields::describe_value(v));
  std::vector<std::pair<int32_t, float>> out;
  for (const auto& [key, bias] : v.items()) {
    int64_t id = -1;
    const bool digits =
        !key.empty() && key.size() <= 10 &&
        std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (digits) id = std::stoll(key);
    if (!digits || id > std::numeric_limits<int32_t>::max())
      fail("field 'logit_bias': key '{}' is not a token id", key.substr(0, 64));
    out.emplace_back(int32_t(id), to_float(bias, fmt::format("logit_bias[\"{}\"]", key)));
  }
  return out;
}

// Chat completions name two fields their own way: `logprobs` is a switch and
// `top_logprobs` the count; `max_completion_tokens` replaces `max_tokens` (still taken).
void read_chat_fields(const nlohmann::json& j, SamplingParams& p) {
  const bool logprobs = json_fields::get_bool(j, "logprobs").value_or(false);
  std::optional<int64_t> top = json_fields::get_int(j, "top_logprobs");
  if (top && (*top < 0 || *top > kMaxLogprobs))
    fail("field 'top_logprobs' must be in [0, {}], got {}", kMaxLogprobs, *top);
  if (top && *top > 0 && !logprobs) fail("field 'top_logprobs' needs 'logprobs': true");
  std::optional<int64_t> max = json_fields::get_int(j, "max_completion_tokens");
  std::optional<int64_t> max_tokens = json_fields::get_int(j, "max_tokens");
  if (!max) max = max_tokens;
  if (max) {
    if (*max < 1) fail("field 'max_tokens' must be >= 1, got {}", *max);
    p.max_tokens = int32_t(std::min<int64_t>(*max, std::numeric_limits<int32_t>::max()));
  }
  if (logprobs) p.logprobs = int32_t(top.value_or(0));
}

}  // namespace

void SamplingParams::validate() const {
  if (max_tokens < 1) fail("field 'max_tokens' must be >= 1, got {}", max_tokens);
  if (min_tokens < 0) fail("field 'min_tokens' must be >= 0, got {}", min_tokens);
  if (min_tokens > max_tokens) {
    fail("field 'min_tokens' must be <= max_tokens ({}), got {}", max_tokens, min_tokens);
  }
  check_finite("temperature", temperature);
  if (temperature < 0.0f) fail("field 'temperature' must be >= 0, got {}", temperature);
  check_finite("top_p", top_p);
  if (!(top_p > 0.0f && top_p <= 1.0f)) fail("field 'top_p' must be in (0, 1], got {}", top_p);
  if (top_k < -1) fail("field 'top_k' must be -1, 0 (off) or positive, got {}", top_k);
  check_finite("min_p", min_p);
  if (min_p < 0.0f || min_p > 1.0f) fail("field 'min_p' must be in [0, 1], got {}", min_p);
  for (size_t i = 0; i < stop.size(); ++i) {
    if (stop[i].empty()) fail("field 'stop[{}]' must not be an empty string", i);
  }
  for (size_t i = 0; i < stop_token_ids.size(); ++i) {
    if (stop_token_ids[i] < 0) {
      fail("field 'stop_token_ids[{}]' must be >= 0, got {}", i, stop_token_ids[i]);
    }
  }
  for (const auto& [id, bias] : logit_bias) {
    if (id < 0) fail("field 'logit_bias': token id {} is negative", id);
    if (!std::isfinite(bias) || bias < -100.0f || bias > 100.0f)
      fail("field 'logit_bias[\"{}\"]' must be in [-100, 100], got {}", id, bias);
  }
  if (allowed_token_ids) {
    if (allowed_token_ids->empty()) fail("field 'allowed_token_ids' must not be empty");
    for (size_t i = 0; i < allowed_token_ids->size(); ++i)
      if ((*allowed_token_ids)[i] < 0)
        fail("field 'allowed_token_ids[{}]' must be >= 0, got {}", i, (*allowed_token_ids)[i]);
  }
  check_logprob_count("logprobs", logprobs);
  check_logprob_count("prompt_logprobs", prompt_logprobs);
  check_finite("repetition_penalty", repetition_penalty);
  if (repetition_penalty <= 0.0f) {
    fail("field 'repetition_penalty' must be > 0, got {}", repetition_penalty);
  }
  check_finite("presence_penalty", presence_penalty);
  if (presence_penalty < -2.0f || presence_penalty > 2.0f) {
    fail("field 'presence_penalty' must be in [-2, 2], got {}", presence_penalty);
  }
  check_finite("frequency_penalty", frequency_penalty);
  if (frequency_penalty < -2.0f || frequency_penalty > 2.0f) {
    fail("field 'frequency_penalty' must be in [-2, 2], got {}", frequency_penalty);
  }
}

SamplingParams sampling_params_from_json(const nlohmann::json& j, const SamplingParams& defaults,
                                         SamplingDialect dialect) {
  if (!j.is_object()) fail("sampling params must be a JSON object, got {}", j.type_name());
  SamplingParams p = defaults;

  // Calls `read(value)` for a present, non-null key; returns whether the key held null.
  auto field = [&j](const char* name, auto&& read) {
    auto it = j.find(name);
    if (it == j.end()) return false;
    if (it->is_null()) return true;
    read(*it);
    return false;
  };

  const bool chat = dialect == SamplingDialect::kChat;
  if (!chat) field("max_tokens", [&](const auto& v) { p.max_tokens = to_int32(v, "max_tokens"); });
  field("min_tokens", [&](const auto& v) { p.min_tokens = to_int32(v, "min_tokens"); });
  field("temperature", [&](const auto& v) { p.temperature = to_float(v, "temperature"); });
  field("top_p", [&](const auto& v) { p.top_p = to_float(v, "top_p"); });
  field("top_k", [&](const auto& v) { p.top_k = to_int32(v, "top_k"); });
  field("min_p", [&](const auto& v) { p.min_p = to_float(v, "min_p"); });
  if (field("seed", [&](const auto& v) { p.seed = read_seed(v, "seed"); })) p.seed.reset();
  field("stop", [&](const auto& v) { p.stop = read_stop(v, "stop"); });
  field("stop_token_ids",
        [&](const auto& v) { p.stop_token_ids = read_int32_list(v, "stop_token_ids"); });
  field("ignore_eos", [&](const auto& v) { p.ignore_eos = to_bool(v, "ignore_eos"); });
  field("include_stop_str_in_output", [&](const auto& v) {
    p.include_stop_str_in_output = to_bool(v, "include_stop_str_in_output");
  });
  if (chat) {
    read_chat_fields(j, p);
  } else if (field("logprobs", [&](const auto& v) { p.logprobs = to_int32(v, "logprobs"); })) {
    p.logprobs.reset();
  }
  if (field("prompt_logprobs",
            [&](const auto& v) { p.prompt_logprobs = to_int32(v, "prompt_logprobs"); })) {
    p.prompt_logprobs.reset();
  }
  field("repetition_penalty",
        [&](const auto& v) { p.repetition_penalty = to_float(v, "repetition_penalty"); });
  field("presence_penalty",
        [&](const auto& v) { p.presence_penalty = to_float(v, "presence_penalty"); });
  field("frequency_penalty",
        [&](const auto& v) { p.frequency_penalty = to_float(v, "frequency_penalty"); });
  field("skip_special_tokens",
        [&](const auto& v) { p.skip_special_tokens = to_bool(v, "skip_special_tokens"); });

  field("logit_bias", [&](const auto& v) { p.logit_bias = read_logit_bias(v); });
  if (field("allowed_token_ids",
            [&](const auto& v) { p.allowed_token_ids = read_int32_list(v, "allowed_token_ids"); }))
    p.allowed_token_ids.reset();

  p.validate();
  return p;
}

}  // namespace relayllm
