#include "serve_command.h"

#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>

#include "engine_flags.h"
#include "relayllm/common/error.h"
#include "relayllm/dist/rank_processes.h"
#include "relayllm/model/generation_config.h"
#include "relayllm/model/weight_quantization.h"
#include "relayllm/server/http_server.h"
#include "relayllm/server/openai_server.h"
#include "tensor_parallel_command.h"
#include "vllm_flags.h"

namespace relayllm {
namespace {

struct ServeArgs {
  EngineOptions engine;
  SamplingFlags sampling;
  HttpServerOptions http;
  OpenAiServerOptions api;
  std::string chat_template_file;
  std::vector<std::string> served_model_names;
  double log_stats_interval_s = 10;
  int64_t max_queue = 1024;
  VllmFlags vllm;
  double shutdown_timeout_s = 30;
};

// Many concurrent streams need many sockets: lift the soft descriptor limit to the hard one.
void raise_fd_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

// vLLM's --chat-template: a file, or the template itself when the value cannot be
// opened and has a character only a template has.
std::string read_chat_template(const std::string& value) {
  std::ifstream in(value, std::ios::binary);
  if (!in.good()) {
    RELAYLLM_CHECK(value.find_first_of("{}\n") != std::string::npos,
                   "--chat-template {}: cannot open the file (and the value has none of '{{', "
                   "'}}' or a newline, so it is no inline template either)",
                   value);
    return value;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// Maps the vLLM-spelled flags onto the server's options; throws Error for a refused one.
void apply_vllm_flags(ServeArgs& args) {
  VllmFlags& v = args.vllm;
  if (!v.log_level.empty()) spdlog::set_level(spdlog::level::from_str(v.log_level));
  check_vllm_flags(v);
  parse_load_quantization(args.engine.quantization);  // a refused value fails before listening
  if (!v.positional_model.empty()) {
    RELAYLLM_CHECK(args.engine.model.empty() || args.engine.model == v.positional_model,
                   "the model is given twice: '{}' and --model '{}'", v.positional_model,
                   args.engine.model);
    args.engine.model = v.positional_model;
  }
  if (!args.served_model_names.empty()) {
    args.api.served_model_name = args.served_model_names.front();
    args.api.served_model_aliases.assign(args.served_model_names.begin() + 1,
                                         args.served_model_names.end());
  }
  args.api.log_requests = v.enable_log_requests;
  args.api.max_log_len = v.max_log_len;
  args.api.log_stats_interval_s = v.disable_log_stats ? 0 : args.log_stats_interval_s;
  args.api.max_logprobs = v.max_logprobs;
  args.api.cors.allowed_origins = parse_json_list_flag(v.allowed_origins, "--allowed-origins");
  args.api.cors.allowed_methods = parse_json_list_flag(v.allowed_methods, "--allowed-methods");
  args.api.cors.allowed_headers = parse_json_list_flag(v.allowed_headers, "--allowed-headers");
  args.api.cors.allow_credentials = v.allow_credentials;
  args.api.tools = {v.tool_call_parser, v.enable_auto_tool_choice};
  args.api.cache_info.cache_dtype = v.kv_cache_dtype;
  args.api.cache_info.gpu_memory_utilization = args.engine.gpu_memory_utilization;
  const std::string& g = v.generation_config;
  if (g != "auto" && g != "vllm")
    RELAYLLM_CHECK(
        std::filesystem::is_regular_file(std::filesystem::path(g) / "generation_config.json"),
        "--generation-config {}: expected auto, vllm, or a folder holding "
        "generation_config.json",
        g);
}

// The sampling defaults --generation-config asks for.
std::optional<GenerationConfig> generation_defaults(const std::string& flag,
                                                    const std::optional<GenerationConfig>& model) {
  if (flag == "auto") return model;
  if (flag == "vllm") return std::nullopt;
  return load_generation_config(flag);
}

// Graceful shutdown: stop accepting (health 503), let requests in flight finish for up
// to `timeout_s`, then end the rest with finish_reason "abort" and give their final
// events a moment to reach the clients. A second SIGTERM/SIGINT skips the wait.
void drain(HttpServer& http, OpenAiServer& api, const sigset_t& signals, int sig,
           double timeout_s) {
  using Clock = std::chrono::steady_clock;
  api.begin_drain();
  http.stop_accepting();
  spdlog::info(
      "{}: shutting down; {} requests in flight get up to {:g} s to finish "
      "(send the signal again to end them now)",
      strsignal(sig), http.num_active_requests(), timeout_s);
  auto wait_until_idle = [&](Clock::time_point deadline) {
    while (http.num_active_requests() > 0 && Clock::now() < deadline) {
      timespec tick{0, 50 * 1000 * 1000};
      int got = sigtimedwait(&signals, nullptr, &tick);
      if (got == SIGTERM || got == SIGINT) return false;
    }
    return true;
  };
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(std::max(0.0, timeout_s)));
  wait_until_idle(deadline);
  if (int64_t left = http.num_active_requests(); left > 0) {
    spdlog::info("ending {} requests still in flight with finish_reason \"abort\"", left);
    api.abort_in_flight();
    // Their last chunks are written by the I/O threads; bounded for clients that stopped reading.
    wait_until_idle(Clock::now() + std::chrono::seconds(5));
  }
  spdlog::info("shutdown complete");
}

// A tensor-parallel rank on this host died: every step now waits in a collective that
// never completes, and mpirun ends the job (SIGTERM, then SIGKILL 6 s later: launcher.cc). Use
// that time: health and new requests answer 503 naming the rank, requests in flight end with
// that error, then exit (the engine thread cannot be joined).
[[noreturn]] void stop_after_rank_died(HttpServer& http, OpenAiServer& api,
                                       const RankProcess& dead) {
  const std::string message =
      fmt::format("tensor-parallel rank {} (pid {} on {}) exited; the server is stopping",
                  dead.rank, dead.pid, dead.host);
  spdlog::error("{}", message);
  api.fail_in_flight(message);
  // Their error responses are written by the I/O threads; bounded for clients that stopped
  // reading.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(4);
  while (http.num_active_requests() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  spdlog::default_logger()->flush();
  std::_Exit(1);
}

int run_serve(ServeArgs& args) {
  raise_fd_limit();
  apply_vllm_flags(args);
  // Each connection takes a descriptor; keep room for model files, logs and the engine.
  rlimit fds{};
  if (getrlimit(RLIMIT_NOFILE, &fds) == 0 && fds.rlim_cur != RLIM_INFINITY && fds.rlim_cur > 128 &&
      args.http.max_connections > int64_t(fds.rlim_cur) - 128) {
    spdlog::info("--max-connections {} lowered to {} (the descriptor limit is {})",
                 args.http.max_connections, int64_t(fds.rlim_cur) - 128, int64_t(fds.rlim_cur));
    args.http.max_connections = int64_t(fds.rlim_cur) - 128;
  }
  if (!args.chat_template_file.empty())
    args.api.chat_template = read_chat_template(args.chat_template_file);
  args.api.engine.max_in_flight =
      int64_t(args.engine.engine.scheduler.max_num_seqs) + args.max_queue;

  // Signals are taken by sigwait on this thread only; every thread started below inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);   // no configuration to reload: logged and ignored
  sigaddset(&signals, SIGUSR1);  // the loader finished (or someone sent it: ignored)
  sigaddset(&signals, SIGUSR2);  // the rank watch found a rank gone (or someone sent it)
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  OpenAiServer api(args.api);
  HttpServer http(args.http,
                  [&api](const HttpRequest& request, std::shared_ptr<HttpExchange> exchange) {
                    api.handle(request, std::move(exchange));
                  });
  http.start();
  spdlog::info("listening on http://{}:{} (loading the model; /health answers 503 until ready)",
               args.http.host, http.port());

  std::string load_error;
  std::atomic<bool> loaded{false}, load_done{false};
  std::thread loader([&] {
    try {
      ServingEngine serving = create_engine(args.engine);
      SamplingParams defaults = args.sampling.resolve(default_sampling_params(
          generation_defaults(args.vllm.generation_config, serving.generation)));
      api.set_engine(std::move(serving), defaults);
      loaded = true;
    } catch (const std::exception& e) {
      load_error = e.what();
    }
    load_done = true;
    kill(getpid(), SIGUSR1);
  });

  // Tensor parallelism: the other ranks on this host, watched from a thread that signals
  // this loop (the loop owns the HTTP server and the API).
  std::unique_ptr<RankWatch> rank_watch;
  if (!args.engine.rank_processes.empty())
    rank_watch = std::make_unique<RankWatch>(args.engine.rank_processes, 0,
                                             [](const RankProcess&) { kill(getpid(), SIGUSR2); });
  auto rank_died = [&]() -> std::optional<RankProcess> {
    return rank_watch ? rank_watch->find_exited() : std::nullopt;
  };

  int exit_code = 0;
  for (;;) {
    int sig = 0;
    sigwait(&signals, &sig);
    // mpirun's SIGTERM after a rank died looks like any other: look at the ranks first.
    if (std::optional<RankProcess> dead = rank_died()) stop_after_rank_died(http, api, *dead);
    if (sig == SIGUSR2) {
      spdlog::info("SIGUSR2 ignored (it has no meaning for relayllm serve)");
      continue;
    }
    if (sig == SIGUSR1) {
      if (!load_done || !loader.joinable()) {
        spdlog::info("SIGUSR1 ignored (it has no meaning for relayllm serve)");
        continue;
      }
      loader.join();
      if (!loaded) {
        spdlog::error("cannot load the model: {}", load_error);
        exit_code = 1;
        break;
      }
      spdlog::info("ready: serving on http://{}:{}", args.http.host, http.port());
      continue;
    }
    if (sig == SIGHUP) {
      spdlog::info("SIGHUP ignored (relayllm serve has no configuration to reload)");
      continue;
    }
    if (loader.joinable()) {
      // The model is still loading and cannot be interrupted; nothing is in flight.
      spdlog::info("{}: shutting down while loading", strsignal(sig));
      std::_Exit(0);
    }
    if (exit_code == 0) drain(http, api, signals, sig, args.shutdown_timeout_s);
    break;
  }
  http.stop();
  api.shutdown();
  return exit_code;
}

}  // namespace

void add_serve_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve the OpenAI-compatible HTTP API");
  add_engine_flags(*cmd, args->engine);
  add_sampling_flags(*cmd, args->sampling);
  cmd->add_option("--host", args->http.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", args->http.port, "Port to listen on (0: any free port)")
      ->capture_default_str();
  cmd->add_option("--served-model-name", args->served_model_names,
                  "Model name(s) requests may use; the first is the one responses and metrics "
                  "report (default: the model's folder or file name)");
  cmd->add_option("--api-key", args->api.api_key,
                  "Require 'Authorization: Bearer KEY' on /v1/*, /tokenize and /detokenize")
      ->envname("RELAYLLM_API_KEY");
  cmd->add_option("--chat-template", args->chat_template_file,
                  "Jinja chat template, a file or the template text itself, used instead of the "
                  "tokenizer's chat_template");
  cmd->add_option("--log-stats-interval", args->log_stats_interval_s,
                  "Seconds between throughput log lines (while there is work)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  add_vllm_flags(*cmd, args->vllm);
  cmd->add_option("--max-queue", args->max_queue,
                  "Requests that may wait beyond --max-num-seqs running ones; more get 429")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-body-bytes", args->http.max_body_bytes,
                  "Largest request body; larger ones get 413")
      ->capture_default_str();
  cmd->add_option("--max-json-depth", args->api.max_json_depth,
                  "Deepest nesting of arrays/objects in a request body; deeper ones get 400")
      ->capture_default_str()
      ->check(CLI::Range(2, 100000));
  cmd->add_option("--max-relay-prefixes", args->api.max_relay_prefixes,
                  "Most relay prefixes registered through POST /v1/relay_prefixes")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-auto-relay-prefixes", args->api.engine.max_auto_prefixes,
                  "Most chat system prompts kept as automatic relay prefixes (LRU)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--shutdown-timeout", args->shutdown_timeout_s,
                  "On SIGTERM/SIGINT: seconds requests in flight may take to finish before they "
                  "end with finish_reason \"abort\"")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-connections", args->http.max_connections,
                  "Most open connections; more are answered 503 and closed (0: no limit)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--idle-timeout", args->http.idle_timeout_s,
                  "Seconds a keep-alive connection may wait for its next request")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--header-timeout", args->http.header_timeout_s,
                  "Seconds from a request's first byte to the end of its headers")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--body-timeout", args->http.body_timeout_s,
                  "Seconds from the end of a request's headers to the end of its body")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--metrics-require-api-key", args->api.metrics_require_api_key,
                "With --api-key, /metrics needs the key too (default: public, as in vLLM)");
  cmd->add_option("--max-response-entries", args->api.max_response_entries,
                  "Most tokens plus logprob entries one request may ask for "
                  "(prompts x n x max_tokens x (1 + logprobs), plus prompt logprobs)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--api-threads", args->api.num_workers,
                  "Threads that parse request bodies, render chat templates and tokenize")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--http-threads", args->http.num_threads,
                  "Threads for HTTP I/O (connections, /health, /metrics)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->callback([args, &exit_code] {
    exit_code = run_tensor_parallel(args->engine, [&] { return run_serve(*args); });
  });
}

}  // namespace relayllm
