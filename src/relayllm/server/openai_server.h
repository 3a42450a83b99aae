// The OpenAI-compatible API over an AsyncEngine: routes, auth, request parsing,
// responses and server-sent events. The server answers /health with 503 until
// set_engine() hands it a loaded model, so it can listen while loading.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "relayllm/chat/chat_template.h"
#include "relayllm/server/async_engine.h"
#include "relayllm/server/cors.h"
#include "relayllm/server/http_server.h"
#include "relayllm/server/metrics.h"
#include "relayllm/serving/request_parser.h"

namespace relayllm {

struct OpenAiServerOptions {
  std::string served_model_name;  // empty: the model's own name
  // More names requests may use for the model (vLLM's several --served-model-name);
  // responses and metrics report served_model_name.
  std::vector<std::string> served_model_aliases;
  CorsOptions cors;
  bool log_requests = false;         // one log line per request as it arrives
  int64_t max_log_len = -1;          // prompt characters/ids in that line; -1: all
  double log_stats_interval_s = 10;  // the periodic throughput line; 0: none
  int32_t max_logprobs = 20;         // most logprobs / prompt_logprobs a request may ask for
  CacheConfigInfo cache_info;  // cache_dtype and gpu_memory_utilization; the rest from the engine
  std::string api_key;         // empty: no auth
  // With an api_key, /metrics needs it too; off by default, as in vLLM, where /metrics
  // is public so that scrapers need no key.
  bool metrics_require_api_key = false;
  std::string chat_template;  // template text; empty: the tokenizer's, else the default
  ToolSettings tools;         // --tool-call-parser, --enable-auto-tool-choice
  AsyncEngineOptions engine;
  int32_t max_relay_prefixes = 64;  // named prefixes registered through the API
  int32_t max_n = 128;              // most choices per request
  // Chat system parts shorter than this many KV blocks are not worth a prefix.
  int32_t min_auto_prefix_blocks = 2;
  int32_t max_json_depth = 128;  // request bodies nested deeper get 400 (--max-json-depth)
  // Threads that parse bodies, render templates and tokenize, so that a huge prompt
  // never holds an I/O thread (/health stays fast).
  int32_t num_workers = 2;
  // Largest response a request may ask for, in tokens and logprob entries:
  // prompts x n x max_tokens x (1 + logprobs), plus the prompt logprobs asked for.
  int64_t max_response_entries = int64_t(1) << 24;
  // The limits the relay prefix manager enforces (from the fields above).
  RelayPrefixLimits prefix_limits() const {
    return {max_relay_prefixes, engine.max_auto_prefixes, min_auto_prefix_blocks};
  }
};

class OpenAiServer {
 public:
  explicit OpenAiServer(OpenAiServerOptions options);
  ~OpenAiServer();

  // The HttpHandler; runs on a connection's strand.
  void handle(const HttpRequest& request, std::shared_ptr<HttpExchange> exchange);

  // Starts the engine thread and begins answering API calls.
  void set_engine(ServingEngine serving, const SamplingParams& defaults);
  // Graceful shutdown, first step: /health answers 503 and new API requests 503;
  // requests in flight go on.
  void begin_drain();
  // Second step: requests still in flight end now with finish_reason "abort" (streams
  // get their final chunk and [DONE]); the engine keeps running to deliver that.
  void abort_in_flight();
  // The engine can no longer run (a tensor-parallel rank died: its steps wait in a
  // collective forever). /health and new requests answer 503 with `message`; requests in
  // flight end with that error now, from the calling thread. The engine cannot be stopped
  // after this: the process must exit without shutdown().
  void fail_in_flight(const std::string& message);
  // Stops the engine (requests in flight end with "abort"). Call after the
  // HTTP server stopped running handlers.
  void shutdown();

 private:
  struct Ready;
  struct Workers;
  using Exchange = std::shared_ptr<HttpExchange>;

  // Runs fn, answering its ApiError/Error/JSON errors as 4xx and others as 500.
  static void answer_errors(const Exchange& exchange, const std::function<void()>& fn);

  void route(const HttpRequest& request, const Exchange& exchange, Ready& ready);
  void handle_completions(const nlohmann::json& body, const Exchange& exchange, Ready& ready);
  void handle_chat(const nlohmann::ordered_json& body, const Exchange& exchange, Ready& ready);
  void handle_tokenize(const nlohmann::ordered_json& body, const Exchange& exchange, Ready& ready);
  void handle_detokenize(const nlohmann::json& body, const Exchange& exchange, Ready& ready);
  void handle_models(const Exchange& exchange, Ready& ready);
  void handle_metrics(const Exchange& exchange);
  // Routes answered without auth and while the model loads; false: not one of them.
  bool handle_service_route(const HttpRequest& request, const Exchange& exchange);
  void check_model(const nlohmann::json& body, const Ready& ready) const;
  void check_logprobs(const SamplingParams& params) const;
  void log_request(const std::string& id, const std::string& prompt,
                   const std::vector<int32_t>& ids, const SamplingParams& params) const;
  void list_prefixes(const Exchange& exchange, Ready& ready);
  void register_prefix(const nlohmann::json& body, const Exchange& exchange, Ready& ready);
  void remove_prefix(const std::string& name, const Exchange& exchange, Ready& ready);
  // Submits a parsed completion or chat request and answers it as it runs.
  void start_job(const ParsedRequest& parsed, const Exchange& exchange, Ready& ready);

  // What the request parser needs to know of the loaded engine.
  RequestContext request_context(const Ready& ready) const;
  std::string next_id(const char* prefix);
  std::string draining_message();

  OpenAiServerOptions options_;
  ServerMetrics metrics_;
  std::unique_ptr<Ready> ready_;
  std::unique_ptr<Workers> workers_;
  std::atomic<bool> is_ready_{false};
  std::atomic<bool> draining_{false};
  std::mutex failure_mutex_;
  std::string failure_;  // fail_in_flight's message, answered while draining
  std::atomic<uint64_t> id_counter_{0};
  uint64_t id_salt_ = 0;
};

void send_json(const std::shared_ptr<HttpExchange>& exchange, int status,
               const nlohmann::json& body);
void send_error(const std::shared_ptr<HttpExchange>& exchange, int status,
                const std::string& message);

}  // namespace relayllm
