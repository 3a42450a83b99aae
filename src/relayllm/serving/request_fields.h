// Every field of the OpenAI completions and chat completions request schemas and of vLLM
// 0.9.1's extra fields, with what relayllm does with it: honoured, accepted as metadata that
// cannot change a result, or answered 400 naming the field (never silently ignored). Fields of
// no schema are logged and ignored, as vLLM does. README.md lists the same table.
#pragma once

#include <nlohmann/json.hpp>

namespace relayllm {

enum class RequestApi { kCompletions, kChat };

// Throws Error ("field 'suffix' is not supported: ...") for the first field the body sets
// to a value relayllm cannot honour.
void check_request_fields(const nlohmann::json& body, RequestApi api);

}  // namespace relayllm
