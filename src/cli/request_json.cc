#include "request_json.h"

namespace relayllm {
namespace {

double seconds_between(Clock::time_point from, const std::optional<Clock::time_point>& to) {
  return to ? std::chrono::duration<double>(*to - from).count() : 0.0;
}

}  // namespace

nlohmann::json token_logprobs_json(const TokenLogprobs& entry) {
  nlohmann::json object = nlohmann::json::object();
  for (const auto& [token, logprob] : entry.top) object[std::to_string(token)] = logprob;
  object[std::to_string(entry.token)] = entry.logprob;
  return object;
}

nlohmann::json finished_request_json(const Sequence& seq) {
  nlohmann::json j;
  j["text"] = seq.text;
  j["token_ids"] = seq.output_ids;
  j["finish_reason"] = seq.finish_reason;
  j["stop_reason"] = seq.stop_reason ? nlohmann::json(*seq.stop_reason) : nlohmann::json(nullptr);
  j["prompt_token_ids"] = seq.prompt_ids;
  j["num_cached_tokens"] = seq.num_prefix_cache_hit_tokens;
  j["relay_prefix_tokens"] = seq.relay_prefix_tokens;
  double e2e = seconds_between(seq.arrival_time, seq.finish_time);
  double ttft = seconds_between(seq.arrival_time, seq.first_token_time);
  size_t n = seq.output_ids.size();
  j["timings"] = {
      {"queue_s", seconds_between(seq.arrival_time, seq.first_scheduled_time)},
      {"ttft_s", ttft},
      {"tpot_s", n > 1 ? (e2e - ttft) / double(n - 1) : 0.0},
      {"e2e_s", e2e},
  };
  if (seq.params.logprobs) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& entry : seq.logprobs) list.push_back(token_logprobs_json(entry));
    j["logprobs"] = list;
  }
  if (seq.params.prompt_logprobs) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& entry : seq.prompt_logprobs)
      list.push_back(entry ? token_logprobs_json(*entry) : nlohmann::json(nullptr));
    j["prompt_logprobs"] = list;
  }
  return j;
}

}  // namespace relayllm
