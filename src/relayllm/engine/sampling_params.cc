#include "relayllm/engine/sampling_params.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "relayllm/common/error.h"

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

float read_float(const nlohmann::json& v, const char* field) {
  if (!v.is_number()) fail("field '{}' must be a number, got {}", field, v.type_name());
  double d = v.get<double>();
  // A finite double beyond float range would silently become inf.
  if (std::isfinite(d) && std::fabs(d) > double(std::numeric_limits<float>::max())) {
    fail("field '{}' is out of range, got {}", field, d);
  }
  return float(d);
}

int64_t read_int64(const nlohmann::json& v, const char* field) {
  if (!v.is_number_integer()) fail("field '{}' must be an integer, got {}", field, v.type_name());
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > uint64_t(std::numeric_limits<int64_t>::max())) {
      fail("field '{}' is out of range, got {}", field, u);
    }
    return int64_t(u);
  }
  return v.get<int64_t>();
}

int32_t read_int32(const nlohmann::json& v, const char* field) {
  int64_t x = read_int64(v, field);
  if (x < std::numeric_limits<int32_t>::min() || x > std::numeric_limits<int32_t>::max()) {
    fail("field '{}' is out of range, got {}", field, x);
  }
  return int32_t(x);
}

bool read_bool(const nlohmann::json& v, const char* field) {
  if (!v.is_boolean()) fail("field '{}' must be a boolean, got {}", field, v.type_name());
  return v.get<bool>();
}

// Seeds are opaque 64-bit values: negative integers (accepted by vLLM) keep their bit pattern.
uint64_t read_seed(const nlohmann::json& v, const char* field) {
  if (!v.is_number_integer()) fail("field '{}' must be an integer, got {}", field, v.type_name());
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  return uint64_t(v.get<int64_t>());
}

std::vector<std::string> read_stop(const nlohmann::json& v, const char* field) {
  if (v.is_string()) return {v.get<std::string>()};
  if (!v.is_array()) {
    fail("field '{}' must be a string or a list of strings, got {}", field, v.type_name());
  }
  std::vector<std::string> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_string()) {
      fail("field '{}[{}]' must be a string, got {}", field, i, v[i].type_name());
    }
    out.push_back(v[i].get<std::string>());
  }
  return out;
}

std::vector<int32_t> read_int32_list(const nlohmann::json& v, const char* field) {
  if (!v.is_array()) fail("field '{}' must be a list of integers, got {}", field, v.type_name());
  std::vector<int32_t> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    out.push_back(read_int32(v[i], fmt::format("{}[{}]", field, i).c_str()));
  }
  return out;
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

SamplingParams sampling_params_from_json(const nlohmann::json& j, const SamplingParams& defaults) {
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

  field("max_tokens", [&](const auto& v) { p.max_tokens = read_int32(v, "max_tokens"); });
  field("min_tokens", [&](const auto& v) { p.min_tokens = read_int32(v, "min_tokens"); });
  field("temperature", [&](const auto& v) { p.temperature = read_float(v, "temperature"); });
  field("top_p", [&](const auto& v) { p.top_p = read_float(v, "top_p"); });
  field("top_k", [&](const auto& v) { p.top_k = read_int32(v, "top_k"); });
  field("min_p", [&](const auto& v) { p.min_p = read_float(v, "min_p"); });
  if (field("seed", [&](const auto& v) { p.seed = read_seed(v, "seed"); })) p.seed.reset();
  field("stop", [&](const auto& v) { p.stop = read_stop(v, "stop"); });
  field("stop_token_ids",
        [&](const auto& v) { p.stop_token_ids = read_int32_list(v, "stop_token_ids"); });
  field("ignore_eos", [&](const auto& v) { p.ignore_eos = read_bool(v, "ignore_eos"); });
  field("include_stop_str_in_output", [&](const auto& v) {
    p.include_stop_str_in_output = read_bool(v, "include_stop_str_in_output");
  });
  if (field("logprobs", [&](const auto& v) { p.logprobs = read_int32(v, "logprobs"); })) {
    p.logprobs.reset();
  }
  if (field("prompt_logprobs",
            [&](const auto& v) { p.prompt_logprobs = read_int32(v, "prompt_logprobs"); })) {
    p.prompt_logprobs.reset();
  }
  field("repetition_penalty",
        [&](const auto& v) { p.repetition_penalty = read_float(v, "repetition_penalty"); });
  field("presence_penalty",
        [&](const auto& v) { p.presence_penalty = read_float(v, "presence_penalty"); });
  field("frequency_penalty",
        [&](const auto& v) { p.frequency_penalty = read_float(v, "frequency_penalty"); });
  field("skip_special_tokens",
        [&](const auto& v) { p.skip_special_tokens = read_bool(v, "skip_special_tokens"); });

  p.validate();
  return p;
}

}  // namespace relayllm
