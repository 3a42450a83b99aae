// The pieces of the vLLM drop-in that need no server: model ids from paths, CORS
// decisions, JSON list flags, the throughput line and the OpenAPI document.
#include <gtest/gtest.h>

#include <set>

#include "relayllm/common/error.h"
#include "relayllm/model/model_id.h"
#include "relayllm/server/cors.h"
#include "relayllm/server/openapi.h"
#include "relayllm/server/stats_logger.h"

namespace relayllm {
namespace {

TEST(ModelId, IsTheBaseNameOfAFolderOrGgufFile) {
  EXPECT_EQ(model_id_from_path("/models/Llama-3-8B"), "Llama-3-8B");
  EXPECT_EQ(model_id_from_path("/models/Llama-3-8B/"), "Llama-3-8B");
  EXPECT_EQ(model_id_from_path("relative/dir/Qwen3-0.6B"), "Qwen3-0.6B");
  EXPECT_EQ(model_id_from_path("/x/SmolLM2-135M-Instruct.Q4_1.gguf"), "SmolLM2-135M-Instruct");
  EXPECT_EQ(model_id_from_path("/x/Mistral-7B-v0.1-Q4_K_M.gguf"), "Mistral-7B-v0.1");
  EXPECT_EQ(model_id_from_path("/x/phi-2.IQ3_XS.GGUF"), "phi-2");
  EXPECT_EQ(model_id_from_path("/x/tiny-f16.gguf"), "tiny");
  EXPECT_EQ(model_id_from_path("/x/model-bf16.gguf"), "model");
  EXPECT_EQ(model_id_from_path("/x/plain.gguf"), "plain");
  // Only a tag at the end is cut: "Q4" inside a name stays.
  EXPECT_EQ(model_id_from_path("/x/Q4-chat-v2.gguf"), "Q4-chat-v2");
  // Nothing left of the file name: the GGUF's general.name.
  EXPECT_EQ(model_id_from_path("/x/Q8_0.gguf", "Tiny Model"), "Q8_0");
  EXPECT_EQ(model_id_from_path("/x/.gguf", "Tiny Model"), "Tiny Model");
}

HttpRequest request(const std::string& method, std::map<std::string, std::string> headers) {
  HttpRequest r;
  r.method = method;
  r.path = "/v1/completions";
  r.headers = std::move(headers);
  return r;
}

std::string header(const CorsDecision& d, const std::string& name) {
  for (const auto& [n, v] : d.headers)
    if (n == name) return v;
  return "<none>";
}

TEST(Cors, AnyOriginWithoutCredentialsAnswersStar) {
  CorsOptions o;
  CorsDecision d = apply_cors(o, request("GET", {{"origin", "http://a.example"}}));
  EXPECT_FALSE(d.preflight);
  EXPECT_EQ(header(d, "Access-Control-Allow-Origin"), "*");
  EXPECT_EQ(header(d, "Access-Control-Allow-Credentials"), "<none>");
  // No Origin: not a cross-origin request, no headers.
  EXPECT_TRUE(apply_cors(o, request("GET", {})).headers.empty());
}

TEST(Cors, CredentialsEchoTheOrigin) {
  CorsOptions o;
  o.allow_credentials = true;
  CorsDecision d = apply_cors(o, request("POST", {{"origin", "http://a.example"}}));
  EXPECT_EQ(header(d, "Access-Control-Allow-Origin"), "http://a.example");
  EXPECT_EQ(header(d, "Vary"), "Origin");
  EXPECT_EQ(header(d, "Access-Control-Allow-Credentials"), "true");
}

TEST(Cors, PreflightChecksOriginMethodAndHeaders) {
  CorsOptions o;
  o.allowed_origins = {"http://ok.example"};
  o.allowed_methods = {"GET", "post"};
  o.allowed_headers = {"Authorization"};
  auto preflight = [&](const std::string& origin, const std::string& method,
                       const std::string& headers) {
    return apply_cors(o, request("OPTIONS", {{"origin", origin},
                                             {"access-control-request-method", method},
                                             {"access-control-request-headers", headers}}));
  };
  CorsDecision ok = preflight("http://ok.example", "POST", "authorization, Content-Type");
  EXPECT_TRUE(ok.preflight);
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(header(ok, "Access-Control-Allow-Methods"), "GET, POST");
  EXPECT_EQ(header(ok, "Access-Control-Allow-Origin"), "http://ok.example");
  CorsDecision bad_origin = preflight("http://evil.example", "POST", "");
  EXPECT_EQ(bad_origin.status, 400);
  EXPECT_EQ(header(bad_origin, "Access-Control-Allow-Origin"), "<none>");
  EXPECT_EQ(preflight("http://ok.example", "DELETE", "").status, 400);
  CorsDecision bad_header = preflight("http://ok.example", "GET", "x-secret");
  EXPECT_EQ(bad_header.status, 400);
  EXPECT_NE(bad_header.body.find("headers"), std::string::npos);
  // OPTIONS without Access-Control-Request-Method is no preflight.
  EXPECT_FALSE(apply_cors(o, request("OPTIONS", {{"origin", "http://ok.example"}})).preflight);
}

TEST(Cors, JsonListFlags) {
  EXPECT_EQ(parse_json_list_flag("[\"*\"]", "--allowed-origins"), std::vector<std::string>{"*"});
  EXPECT_EQ(parse_json_list_flag(" [\"GET\", \"POST\"] ", "--allowed-methods"),
            (std::vector<std::string>{"GET", "POST"}));
  EXPECT_EQ(parse_json_list_flag("http://a.example", "--allowed-origins"),
            std::vector<std::string>{"http://a.example"});
  EXPECT_THROW(parse_json_list_flag("[1]", "--allowed-origins"), Error);
  EXPECT_THROW(parse_json_list_flag("[\"a\"", "--allowed-origins"), Error);
}

TEST(StatsLine, ThroughputRatesAndShares) {
  EngineSnapshot before, now;
  before.prompt_tokens = 100;
  now.prompt_tokens = 300;  // 200 computed
  now.generation_tokens = 50;
  now.prefix_cache_queries = 400;
  now.prefix_cache_hits = 100;    // 25% hit rate
  now.relay_shared_tokens = 100;  // of 200 + 100 + 100 prompt tokens served
  now.relay_attached_requests = 3;
  now.num_running = 2;
  now.num_waiting = 1;
  now.num_blocks = 10;
  now.num_free_blocks = 6;
  std::string line = format_stats_line(before, now, 2.0);
  EXPECT_NE(line.find("Avg prompt throughput: 100.0 tokens/s"), std::string::npos) << line;
  EXPECT_NE(line.find("Avg generation throughput: 25.0 tokens/s"), std::string::npos) << line;
  EXPECT_NE(line.find("Running: 2 reqs, Waiting: 1 reqs"), std::string::npos) << line;
  EXPECT_NE(line.find("KV cache usage: 40.0%"), std::string::npos) << line;
  EXPECT_NE(line.find("Prefix cache hit rate: 25.0%"), std::string::npos) << line;
  EXPECT_NE(line.find("Relay: 25.0% of prompt tokens (100 tokens, 3 reqs)"), std::string::npos)
      << line;
}

TEST(OpenApi, ListsEveryRouteOnce) {
  nlohmann::json doc = openapi_document("9.9.9");
  EXPECT_EQ(doc["openapi"], "3.1.0");
  EXPECT_EQ(doc["info"]["version"], "9.9.9");
  std::set<std::string> ids;
  size_t operations = 0;
  for (const RouteDoc& r : kRoutes) {
    ASSERT_TRUE(doc["paths"].contains(r.path)) << r.path;
    ASSERT_TRUE(doc["paths"][r.path].contains(r.method)) << r.path << " " << r.method;
    ids.insert(doc["paths"][r.path][r.method]["operationId"].get<std::string>());
    ++operations;
  }
  EXPECT_EQ(ids.size(), operations);  // operationIds are unique
}

}  // namespace
}  // namespace relayllm
