#include "relayllm/server/openai_server.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <ctime>
#include <random>

#include "relayllm/common/error.h"
#include "relayllm/common/json_fields.h"
#include "relayllm/common/version.h"
#include "relayllm/server/api_error.h"
#include "relayllm/server/auth.h"
#include "relayllm/server/json_body.h"
#include "relayllm/server/openai_protocol.h"
#include "relayllm/server/openapi.h"
#include "relayllm/server/server_state.h"

namespace relayllm {
namespace {

constexpr const char* kJson = "application/json";

bool needs_auth(const std::string& path) {
  return path.rfind("/v1/", 0) == 0 || path == "/tokenize" || path == "/detokenize";
}

bool valid_prefix_name(const std::string& name) {
  if (name.empty() || name.size() > 128) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
      return false;
  return true;
}

}  // namespace

void send_json(const std::shared_ptr<HttpExchange>& exchange, int status,
               const nlohmann::json& body) {
  exchange->respond(status, kJson,
                    body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

void send_error(const std::shared_ptr<HttpExchange>& exchange, int status,
                const std::string& message) {
  if (status >= 500) spdlog::warn("{} {}", status, message);
  send_json(exchange, status, error_body(status, message));
}

struct OpenAiServer::Workers {
  boost::asio::thread_pool pool;
  explicit Workers(int n) : pool(size_t(std::max(1, n))) {}
};

OpenAiServer::OpenAiServer(OpenAiServerOptions options)
    : options_(std::move(options)), workers_(std::make_unique<Workers>(options_.num_workers)) {
  id_salt_ = (uint64_t(std::random_device{}()) << 32) ^ std::random_device{}();
}

OpenAiServer::~OpenAiServer() { shutdown(); }

void OpenAiServer::set_engine(ServingEngine serving, const SamplingParams& defaults) {
  auto ready = std::make_unique<Ready>();
  ready->model_name =
      options_.served_model_name.empty() ? serving.model_name : options_.served_model_name;
  ready->model_names.push_back(ready->model_name);
  for (const std::string& alias : options_.served_model_aliases)
    if (alias != ready->model_name) ready->model_names.push_back(alias);
  ready->cache_info = options_.cache_info;
  const Engine& engine = *serving.engine;
  ready->cache_info.block_size = engine.block_pool().block_size();
  ready->cache_info.num_gpu_blocks = engine.block_pool().num_blocks();
  ready->cache_info.enable_prefix_caching = engine.config().scheduler.enable_prefix_caching;
  ready->cache_info.enable_relay_attention = engine.config().enable_relay_attention;
  ready->defaults = defaults;
  ready->created = int64_t(std::time(nullptr));
  std::string source = options_.chat_template;
  if (source.empty()) source = serving.engine->tokenizer().chat_template();
  if (source.empty()) source = default_chat_template();
  try {
    ready->chat_template.emplace(source);
  } catch (const Error& e) {
    ready->chat_template_error = e.what();
    spdlog::warn("chat template unusable, /v1/chat/completions will answer 400: {}", e.what());
  }
  serving.engine->relay_prefixes().set_limits(options_.prefix_limits());
  ready->engine = std::make_unique<AsyncEngine>(std::move(serving), options_.engine, metrics_);
  if (options_.log_stats_interval_s > 0) {
    AsyncEngine* async = ready->engine.get();
    ready->stats_logger = std::make_unique<StatsLogger>([async] { return async->snapshot(); },
                                                        options_.log_stats_interval_s);
  }
  // The grammar compiler's token table (~0.1 s of one core for a 50k vocabulary) is built on a
  // worker now rather than by the first request that asks for structured output.
  if (auto compiler = ready->engine->serving().grammar_compiler)
    boost::asio::post(workers_->pool, [compiler] {
      try {
        compiler->prepare();
      } catch (const std::exception& e) {  // the first constrained request retries and reports it
        spdlog::warn("structured output: token table not built at start: {}", e.what());
      }
    });
  ready_ = std::move(ready);
  is_ready_.store(true, std::memory_order_release);
}

void OpenAiServer::begin_drain() { draining_ = true; }

void OpenAiServer::abort_in_flight() {
  draining_ = true;
  if (is_ready_.load(std::memory_order_acquire)) ready_->engine->abort_all();
}

void OpenAiServer::fail_in_flight(const std::string& message) {
  {
    std::lock_guard lock(failure_mutex_);
    failure_ = message;
  }
  draining_ = true;
  if (is_ready_.load(std::memory_order_acquire)) ready_->engine->fail_all(503, message);
}

std::string OpenAiServer::draining_message() {
  std::lock_guard lock(failure_mutex_);
  if (failure_.empty()) return "the server is shutting down";
  return failure_;
}

void OpenAiServer::shutdown() {
  is_ready_.store(false, std::memory_order_release);
  // Work already queued finishes first: it uses ready_.
  if (workers_) workers_->pool.join();
  ready_.reset();
}

std::string OpenAiServer::next_id(const char* prefix) {
  uint64_t n = id_counter_.fetch_add(1) + 1;
  return fmt::format("{}-{:016x}", prefix, (n * 0x9e3779b97f4a7c15ull) ^ id_salt_);
}

void OpenAiServer::answer_errors(const Exchange& exchange, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ApiError& e) {
    send_error(exchange, e.status(), e.what());
  } catch (const Error& e) {
    send_error(exchange, 400, e.what());
  } catch (const nlohmann::json::exception& e) {
    // A value of a type the handler did not check for: still the request's fault.
    send_error(exchange, 400, fmt::format("invalid request: {}", e.what()));
  } catch (const std::exception& e) {
    send_error(exchange, 500, fmt::format("internal error: {}", e.what()));
  }
}

void OpenAiServer::handle(const HttpRequest& request, std::shared_ptr<HttpExchange> exchange) {
  // Cheap answers here, on the I/O thread; everything that parses a body or
  // tokenizes goes to the workers. CORS preflights come before authentication.
  answer_errors(exchange, [&] {
    CorsDecision cors = apply_cors(options_.cors, request);
    for (const auto& [name, value] : cors.headers) exchange->add_header(name, value);
    if (cors.preflight) {
      exchange->respond(cors.status, "text/plain; charset=utf-8", cors.body);
      return;
    }
    if (request.path == "/metrics" && options_.metrics_require_api_key &&
        !authorized(options_.api_key, request.header("authorization"))) {
      send_error(exchange, 401, "missing or invalid API key (send 'Authorization: Bearer <key>')");
      return;
    }
    if (handle_service_route(request, exchange)) return;
    if (needs_auth(request.path) &&
        !authorized(options_.api_key, request.header("authorization"))) {
      send_error(exchange, 401, "missing or invalid API key (send 'Authorization: Bearer <key>')");
      return;
    }
    if (draining_.load()) {
      send_error(exchange, 503, draining_message());
      return;
    }
    if (!is_ready_.load(std::memory_order_acquire)) {
      send_error(exchange, 503, "the model is still loading; retry when /health answers 200");
      return;
    }
    boost::asio::post(workers_->pool, [this, request, exchange] {
      answer_errors(exchange, [&] { route(request, exchange, *ready_); });
    });
  });
}

bool OpenAiServer::handle_service_route(const HttpRequest& request, const Exchange& exchange) {
  const std::string& path = request.path;
  if (path == "/health" || path == "/ping") {
    if (path == "/ping" && request.method != "GET" && request.method != "POST")
      fail_api(405, "method {} is not allowed on /ping (use GET or POST)", request.method);
    if (draining_.load())  // a load balancer stops sending here
      send_json(exchange, 503, error_body(503, draining_message()));
    else if (is_ready_.load(std::memory_order_acquire))
      exchange->respond(200, path == "/ping" ? kJson : "text/plain", path == "/ping" ? "{}\n" : "");
    else  // polled while loading: not worth a log line each time
      send_json(exchange, 503, error_body(503, "the model is still loading"));
    return true;
  }
  auto get_only = [&] {
    if (request.method != "GET")
      fail_api(405, "method {} is not allowed on {} (use GET)", request.method, path);
  };
  if (path == "/metrics") {
    handle_metrics(exchange);
  } else if (path == "/version") {
    get_only();
    send_json(exchange, 200, {{"version", kVersion}});
  } else if (path == "/openapi.json") {
    get_only();
    send_json(exchange, 200, openapi_document(kVersion));
  } else if (path == "/docs") {
    get_only();
    exchange->respond(200, "text/html; charset=utf-8", docs_page());
  } else {
    return false;
  }
  return true;
}

void OpenAiServer::route(const HttpRequest& request, const Exchange& exchange, Ready& ready) {
  const std::string& path = request.path;
  const std::string& method = request.method;
  auto body = [&]() {
    nlohmann::json j = parse_json_body(request.body, options_.max_json_depth);
    if (!j.is_object())
      fail_api(400, "the request body must be a JSON object, got {}", j.type_name());
    return j;
  };
  // Chat bodies keep their key order: templates print tools and arguments as written.
  auto ordered_body = [&]() {
    nlohmann::ordered_json j = parse_json_body_ordered(request.body, options_.max_json_depth);
    if (!j.is_object())
      fail_api(400, "the request body must be a JSON object, got {}", j.type_name());
    return j;
  };
  auto allow = [&](const char* expected) {
    if (method != expected)
      fail_api(405, "method {} is not allowed on {} (use {})", method, path, expected);
  };
  if (path == "/v1/completions") {
    allow("POST");
    handle_completions(body(), exchange, ready);
  } else if (path == "/v1/chat/completions") {
    allow("POST");
    handle_chat(ordered_body(), exchange, ready);
  } else if (path == "/v1/embeddings") {
    allow("POST");
    fail_api(400,
             "the served model '{}' is not an embedding model: relayllm serves generative "
             "models only (no pooling); /v1/embeddings is not available",
             ready.model_name);
  } else if (path == "/v1/responses" || path.rfind("/v1/responses/", 0) == 0) {
    fail_api(501, "the Responses API (/v1/responses) is not implemented; use /v1/chat/completions");
  } else if (path == "/v1/models") {
    allow("GET");
    handle_models(exchange, ready);
  } else if (path == "/tokenize") {
    allow("POST");
    handle_tokenize(ordered_body(), exchange, ready);
  } else if (path == "/detokenize") {
    allow("POST");
    handle_detokenize(body(), exchange, ready);
  } else if (path == "/v1/relay_prefixes") {
    if (method == "GET") {
      list_prefixes(exchange, ready);
    } else {
      allow("POST");
      register_prefix(body(), exchange, ready);
    }
  } else if (path.rfind("/v1/relay_prefixes/", 0) == 0) {
    allow("DELETE");
    remove_prefix(path.substr(std::string("/v1/relay_prefixes/").size()), exchange, ready);
  } else {
    fail_api(404, "no route for {} {}", method, path);
  }
}

void OpenAiServer::handle_models(const Exchange& exchange, Ready& ready) {
  nlohmann::json data = nlohmann::json::array();
  for (const std::string& name : ready.model_names)
    data.push_back({{"id", name},
                    {"object", "model"},
                    {"created", ready.created},
                    {"owned_by", "relayllm"},
                    {"root", ready.model_name},
                    {"parent", nullptr},
                    {"max_model_len", ready.engine->max_model_len()}});
  send_json(exchange, 200, {{"object", "list"}, {"data", std::move(data)}});
}

void OpenAiServer::check_model(const nlohmann::json& body, const Ready& ready) const {
  auto model = json_fields::get_string(body, "model");
  if (model && std::find(ready.model_names.begin(), ready.model_names.end(), *model) ==
                   ready.model_names.end())
    fail_api(404, "the model '{}' does not exist; this server serves '{}'", *model,
             ready.model_name);
}

void OpenAiServer::check_logprobs(const SamplingParams& params) const {
  const int32_t limit = options_.max_logprobs;
  if (params.logprobs && *params.logprobs > limit)
    fail_api(400, "{} logprobs were requested but the server allows at most {} (--max-logprobs)",
             *params.logprobs, limit);
  if (params.prompt_logprobs && *params.prompt_logprobs > limit)
    fail_api(400,
             "{} prompt_logprobs were requested but the server allows at most {} "
             "(--max-logprobs)",
             *params.prompt_logprobs, limit);
}

void OpenAiServer::log_request(const std::string& id, const std::string& prompt,
                               const std::vector<int32_t>& ids, const SamplingParams& p) const {
  if (!options_.log_requests) return;
  const size_t limit = options_.max_log_len < 0 ? SIZE_MAX : size_t(options_.max_log_len);
  std::string shown = prompt.substr(0, std::min(limit, prompt.size()));
  std::string id_list;
  for (size_t i = 0; i < std::min(limit, ids.size()); ++i)
    id_list += (i ? "," : "") + std::to_string(ids[i]);
  std::string quoted =
      nlohmann::json(shown).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  spdlog::info(
      "Received request {}: prompt: {}{}, {} prompt tokens: [{}{}], max_tokens={}, "
      "temperature={}, top_p={}, top_k={}, seed={}",
      id, quoted, shown.size() < prompt.size() ? "..." : "", ids.size(), id_list,
      ids.size() > limit ? ",..." : "", p.max_tokens, p.temperature, p.top_p, p.top_k,
      p.seed ? std::to_string(*p.seed) : "none");
}

void OpenAiServer::handle_metrics(const Exchange& exchange) {
  std::string text;
  if (is_ready_.load(std::memory_order_acquire))
    text = metrics_.render(ready_->engine->snapshot(), ready_->model_name, &ready_->cache_info);
  else
    text = metrics_.render(EngineSnapshot{}, options_.served_model_name, nullptr);
  exchange->respond(200, "text/plain; version=0.0.4; charset=utf-8", std::move(text));
}

void OpenAiServer::handle_tokenize(const nlohmann::ordered_json& ordered_body,
                                   const Exchange& exchange, Ready& ready) {
  const nlohmann::json body(ordered_body);
  const Tokenizer& tokenizer = ready.engine->tokenizer();
  std::vector<int32_t> ids;
  if (body.contains("messages")) {
    bool add_generation_prompt =
        json_fields::get_bool(body, "add_generation_prompt").value_or(true);
    nlohmann::json kwargs = body.value("chat_template_kwargs", nlohmann::json::object());
    RequestContext context = request_context(ready);
    // The tools as a chat request would pass them (tool_choice is not needed here).
    ToolSettings any_choice{"hermes", true};
    nlohmann::ordered_json messages = normalize_messages(ordered_body["messages"]);
    prepare_tool_messages(messages);
    std::string text = render_chat(context, messages, add_generation_prompt, kwargs,
                                   read_tool_request(ordered_body, any_choice).tools);
    ids = tokenizer.encode(text, json_fields::get_bool(body, "add_special_tokens").value_or(false));
  } else {
    auto prompt = json_fields::get_string(body, "prompt");
    if (!prompt) fail_api(400, "field 'prompt' (a string) or 'messages' is required");
    ids =
        tokenizer.encode(*prompt, json_fields::get_bool(body, "add_special_tokens").value_or(true));
  }
  send_json(
      exchange, 200,
      {{"tokens", ids}, {"count", ids.size()}, {"max_model_len", ready.engine->max_model_len()}});
}

void OpenAiServer::handle_detokenize(const nlohmann::json& body, const Exchange& exchange,
                                     Ready& ready) {
  if (!body.contains("tokens")) fail_api(400, "field 'tokens' (a list of token ids) is required");
  std::vector<int32_t> ids = read_token_ids(body["tokens"], "tokens", ready.engine->vocab_size());
  send_json(exchange, 200, {{"prompt", ready.engine->tokenizer().decode(ids, false)}});
}

namespace {

nlohmann::json prefix_json(const RelayPrefix& p, int32_t block_size) {
  return {{"name", p.name},
          {"object", "relay_prefix"},
          {"num_tokens", p.tokens.size()},
          {"num_blocks", p.blocks.size()},
          {"users", p.users},
          {"removing", p.removing},
          {"auto", p.automatic},
          {"block_size", block_size}};
}

}  // namespace

void OpenAiServer::list_prefixes(const Exchange& exchange, Ready& ready) {
  AsyncEngine* engine = ready.engine.get();
  engine->call([exchange, engine](Engine& e) {
    nlohmann::json data = nlohmann::json::array();
    for (const RelayPrefix* p : e.prefixes()) data.push_back(prefix_json(*p, engine->block_size()));
    nlohmann::json body = {{"object", "list"}, {"data", std::move(data)}};
    exchange->post([exchange, body = std::move(body)] { send_json(exchange, 200, body); });
  });
}

void OpenAiServer::register_prefix(const nlohmann::json& body, const Exchange& exchange,
                                   Ready& ready) {
  AsyncEngine* engine = ready.engine.get();
  if (!engine->relay_enabled())
    fail_api(400, "relay prefixes need the server to run with --enable-relay-attention");
  auto name = json_fields::get_string(body, "name");
  if (!name || !valid_prefix_name(*name))
    fail_api(400, "field 'name' must be 1-128 characters of letters, digits, '-', '_' or '.'");
  std::vector<int32_t> tokens;
  if (body.contains("token_ids") && !body["token_ids"].is_null()) {
    if (body.contains("text") && !body["text"].is_null())
      fail_api(400, "give 'text' or 'token_ids', not both");
    tokens = read_token_ids(body["token_ids"], "token_ids", engine->vocab_size());
  } else {
    auto text = json_fields::get_string(body, "text");
    if (!text) fail_api(400, "field 'text' (a string) or 'token_ids' is required");
    tokens = engine->tokenizer().encode(
        *text, json_fields::get_bool(body, "add_special_tokens").value_or(true));
  }
  if (tokens.empty()) fail_api(400, "relay prefix '{}' is empty", *name);
  engine->call([exchange, engine, name = *name, tokens = std::move(tokens)](Engine& e) mutable {
    int status = 200;
    nlohmann::json reply;
    const PrefixRefusal refusal = e.relay_prefixes().check_named(name);
    if (refusal == PrefixRefusal::kExists) {
      status = 409;
      reply = error_body(409, fmt::format("a relay prefix named '{}' exists already", name));
    } else if (refusal == PrefixRefusal::kQuotaFull) {
      status = 429;
      reply = error_body(429, fmt::format("at most {} relay prefixes may be registered "
                                          "(--max-relay-prefixes); remove one first",
                                          e.relay_prefixes().limits().max_named));
    } else {
      try {
        const RelayPrefix& p = e.register_prefix(name, std::move(tokens));
        reply = prefix_json(p, engine->block_size());
      } catch (const KvCapacityError& err) {
        status = 429;
        reply = error_body(429, err.what());
      } catch (const Error& err) {
        status = 400;
        reply = error_body(400, err.what());
      }
    }
    exchange->post(
        [exchange, status, reply = std::move(reply)] { send_json(exchange, status, reply); });
  });
}

void OpenAiServer::remove_prefix(const std::string& name, const Exchange& exchange, Ready& ready) {
  AsyncEngine* engine = ready.engine.get();
  engine->call([exchange, name](Engine& e) {
    int status = 200;
    nlohmann::json reply;
    const RelayPrefix* found = nullptr;
    for (const RelayPrefix* p : e.prefixes())
      if (p->name == name && (!found || found->removing)) found = p;
    if (!found || found->removing) {
      status = 404;
      reply = error_body(404, fmt::format("no relay prefix named '{}'", name));
    } else {
      int32_t users = found->users;
      e.remove_prefix(name);
      // With users left, the prefix stays (marked removing) until its last request ends.
      reply = {
          {"name", name}, {"object", "relay_prefix"}, {"deleted", true}, {"pending_users", users}};
    }
    exchange->post(
        [exchange, status, reply = std::move(reply)] { send_json(exchange, status, reply); });
  });
}

RequestContext OpenAiServer::request_context(const Ready& ready) const {
  RequestContext context;
  context.tokenizer = &ready.engine->tokenizer();
  context.defaults = ready.defaults;
  context.vocab_size = ready.engine->vocab_size();
  context.max_n = options_.max_n;
  context.relay_enabled = ready.engine->relay_enabled();
  context.chat_template = ready.chat_template ? &*ready.chat_template : nullptr;
  context.chat_template_error = ready.chat_template_error;
  context.tools = options_.tools;
  context.grammar_compiler = ready.engine->serving().grammar_compiler.get();
  return context;
}

}  // namespace relayllm
