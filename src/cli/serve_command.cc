#include "serve_command.h"

#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "engine_flags.h"
#include "relayllm/common/error.h"
#include "relayllm/server/http_server.h"
#include "relayllm/server/openai_server.h"

namespace relayllm {
namespace {

struct ServeArgs {
  EngineOptions engine;
  SamplingFlags sampling;
  HttpServerOptions http;
  OpenAiServerOptions api;
  std::string chat_template_file;
  int64_t max_queue = 1024;
};

// Many concurrent streams need many sockets: lift the soft descriptor limit to the hard one.
void raise_fd_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

std::string read_file(const std::string& path, const char* option) {
  std::ifstream in(path, std::ios::binary);
  RELAYLLM_CHECK(in.good(), "{} {}: cannot open the file", option, path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

int run_serve(ServeArgs& args) {
  raise_fd_limit();
  if (!args.chat_template_file.empty())
    args.api.chat_template = read_file(args.chat_template_file, "--chat-template");
  args.api.engine.max_in_flight = int64_t(args.engine.engine.scheduler.max_num_seqs) + args.max_queue;

  // Signals are taken by sigwait on this thread only; every thread started below inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGUSR1);  // the loader finished
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  OpenAiServer api(args.api);
  HttpServer http(args.http, [&api](const HttpRequest& request, std::shared_ptr<HttpExchange> exchange) {
    api.handle(request, std::move(exchange));
  });
  http.start();
  spdlog::info("listening on http://{}:{} (loading the model; /health answers 503 until ready)",
               args.http.host, http.port());

  std::string load_error;
  std::atomic<bool> loaded{false};
  std::thread loader([&] {
    try {
      ServingEngine serving = create_engine(args.engine);
      SamplingParams defaults = args.sampling.resolve(default_sampling_params(serving.generation));
      api.set_engine(std::move(serving), defaults);
      loaded = true;
    } catch (const std::exception& e) {
      load_error = e.what();
    }
    kill(getpid(), SIGUSR1);
  });

  int exit_code = 0;
  for (;;) {
    int sig = 0;
    sigwait(&signals, &sig);
    if (sig == SIGUSR1) {
      loader.join();
      if (!loaded) {
        spdlog::error("cannot load the model: {}", load_error);
        exit_code = 1;
        break;
      }
      spdlog::info("ready: serving on http://{}:{}", args.http.host, http.port());
      continue;
    }
    spdlog::info("signal {}: shutting down", sig);
    if (loader.joinable()) {
      // The model is still loading and cannot be interrupted; nothing else needs cleanup.
      std::_Exit(128 + sig);
    }
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
  cmd->add_option("--served-model-name", args->api.served_model_name,
                  "Model name the API reports and requests must use (default: the model's)");
  cmd->add_option("--api-key", args->api.api_key,
                  "Require 'Authorization: Bearer KEY' on /v1/*, /tokenize and /detokenize")
      ->envname("RELAYLLM_API_KEY");
  cmd->add_option("--chat-template", args->chat_template_file,
                  "Jinja chat template file, used instead of the tokenizer's chat_template");
  cmd->add_option("--max-queue", args->max_queue,
                  "Requests that may wait beyond --max-num-seqs running ones; more get 429")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-body-bytes", args->http.max_body_bytes,
                  "Largest request body; larger ones get 413")->capture_default_str();
  cmd->add_option("--max-relay-prefixes", args->api.max_relay_prefixes,
                  "Most relay prefixes registered through POST /v1/relay_prefixes")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-auto-relay-prefixes", args->api.engine.max_auto_prefixes,
                  "Most chat system prompts kept as automatic relay prefixes (LRU)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--http-threads", args->http.num_threads, "Threads for HTTP, JSON and tokenizing")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->callback([args, &exit_code] { exit_code = run_serve(*args); });
}

}  // namespace relayllm
