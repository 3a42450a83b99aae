// The server's routes as one table, served as an OpenAPI 3 document at
// /openapi.json and as a self-contained page at /docs (it reads /openapi.json).
// Every route the server answers is in kRoutes; the tests request each one.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace relayllm {

struct RouteDoc {
  const char* path;    // OpenAPI path template: "/v1/relay_prefixes/{name}"
  const char* method;  // lower case, as OpenAPI keys operations
  const char* summary;
  bool json_body;  // takes a JSON object body
};

inline constexpr RouteDoc kRoutes[] = {
    {"/health", "get", "200 once the model is loaded, 503 while it loads", false},
    {"/ping", "get", "Health check (SageMaker style): 200 when ready, 503 while loading", false},
    {"/ping", "post", "Health check (SageMaker style): 200 when ready, 503 while loading", false},
    {"/version", "get", "The server's version", false},
    {"/metrics", "get", "Prometheus metrics (relayllm: and vllm: families)", false},
    {"/openapi.json", "get", "This document", false},
    {"/docs", "get", "A page listing the routes of this document", false},
    {"/v1/models", "get", "The served model, under each of its names", false},
    {"/v1/completions", "post", "Text completions (OpenAI API)", true},
    {"/v1/chat/completions", "post", "Chat completions (OpenAI API)", true},
    {"/v1/embeddings", "post", "Embeddings: answers 400, no pooling model is served", true},
    {"/v1/responses", "post", "Responses API: answers 501, not implemented", true},
    {"/tokenize", "post", "Prompt or chat messages to token ids", true},
    {"/detokenize", "post", "Token ids to text", true},
    {"/v1/relay_prefixes", "get", "Registered relay prefixes", false},
    {"/v1/relay_prefixes", "post", "Register a named relay prefix", true},
    {"/v1/relay_prefixes/{name}", "delete", "Remove a named relay prefix", false},
};

nlohmann::json openapi_document(const std::string& version);
std::string docs_page();

}  // namespace relayllm
