// The JSON shape of one finished request, shared by `generate` and tests:
// vLLM's field names, logprobs as a list of {token_id: logprob} objects.
#pragma once

#include <nlohmann/json.hpp>

#include "relayllm/engine/sequence.h"

namespace relayllm {

nlohmann::json token_logprobs_json(const TokenLogprobs& entry);
nlohmann::json finished_request_json(const Sequence& seq);

}  // namespace relayllm
