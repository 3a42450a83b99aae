#include "vllm_flags.h"

#include <spdlog/spdlog.h>

#include "relayllm/common/error.h"
#include "relayllm/engine/sampling_params.h"
#include "relayllm/tools/tool_call_parser.h"

namespace relayllm {
namespace {

// Flags of `vllm serve` whose feature relayllm does not have: ignoring them would
// change what the server does, so they are refused with the reason.
struct RefusedFlag {
  const char* name;
  const char* reason;
};
constexpr RefusedFlag kRefused[] = {
    {"--reasoning-parser", "reasoning-content parsing is not implemented"},
    {"--enable-lora", "LoRA adapters are not supported"},
    {"--lora-modules", "LoRA adapters are not supported"},
    {"--speculative-config", "speculative decoding is not supported"},
    {"--data-parallel-size", "data parallelism is not supported (run one server per device)"},
    {"--enable-expert-parallel", "mixture-of-experts models are not supported"},
    {"--cpu-offload-gb", "weight offloading to CPU memory is not supported"},
    {"--rope-scaling", "overriding the model's RoPE scaling is not supported"},
    {"--hf-overrides", "overriding the model's config.json is not supported"},
};

const std::vector<std::string> kLogLevels = {"trace", "debug", "info",    "warning",
                                             "warn",  "error", "critical"};

}  // namespace

void add_vllm_flags(CLI::App& cmd, VllmFlags& f) {
  f.app = &cmd;
  cmd.add_option("model_tag", f.positional_model,
                 "The model, as vLLM takes it: `relayllm serve MODEL` (same as --model MODEL)");
  cmd.add_option("--pipeline-parallel-size", f.pipeline_parallel_size,
                 "Also -pp. Only 1: pipeline parallelism is not implemented")
      ->capture_default_str();
  cmd.add_flag("--enable-log-requests", f.enable_log_requests,
               "Log one line per request as it arrives (prompt, token ids, sampling)");
  cmd.add_flag("--disable-log-requests", f.disable_log_requests,
               "Do not log requests (the default; vLLM's older switch)");
  cmd.add_option("--max-log-len", f.max_log_len,
                 "Most prompt characters and token ids in a request's log line (default: all)")
      ->check(CLI::NonNegativeNumber);
  cmd.add_flag("--disable-log-stats", f.disable_log_stats, "No periodic throughput line");
  cmd.add_option("--log-level", f.log_level,
                 "Log level of serve: trace | debug | info | warning | error | critical")
      ->check(CLI::IsMember(kLogLevels));
  cmd.add_option("--uvicorn-log-level", f.uvicorn_log_level,
                 "Accepted for vLLM scripts; no effect (the HTTP server logs at --log-level)")
      ->check(CLI::IsMember(kLogLevels));
  cmd.add_flag(
      "--trust-remote-code", f.trust_remote_code,
      "Accepted for vLLM scripts; no effect (relayllm never runs code from a model folder)");
  cmd.add_option("--kv-cache-dtype", f.kv_cache_dtype,
                 "Only auto: the KV cache is kept in the compute --dtype (no fp8 KV cache)")
      ->capture_default_str();
  cmd.add_option("--swap-space", f.swap_space,
                 "Accepted for vLLM scripts; no effect (preempted requests are recomputed, "
                 "never swapped to CPU memory)");
  cmd.add_option("--generation-config", f.generation_config,
                 "Sampling defaults: auto (the model's generation_config.json), vllm (none: "
                 "only the sampling flags), or a folder holding a generation_config.json")
      ->capture_default_str();
  cmd.add_option("--max-logprobs", f.max_logprobs,
                 "Most logprobs and prompt_logprobs a request may ask for")
      ->capture_default_str()
      ->check(CLI::Range(0, int(kMaxLogprobs)));
  cmd.add_option(
         "--tokenizer-mode", f.tokenizer_mode,
         "auto | hf | slow: all read tokenizer.json the same way (mistral is not supported)")
      ->capture_default_str();
  cmd.add_option("--allowed-origins", f.allowed_origins,
                 "CORS: JSON list of origins allowed to call the API")
      ->capture_default_str();
  cmd.add_option("--allowed-methods", f.allowed_methods, "CORS: JSON list of allowed methods")
      ->capture_default_str();
  cmd.add_option("--allowed-headers", f.allowed_headers, "CORS: JSON list of allowed headers")
      ->capture_default_str();
  cmd.add_flag("--allow-credentials", f.allow_credentials, "CORS: allow credentials (cookies)");
  cmd.add_flag("--enable-auto-tool-choice", f.enable_auto_tool_choice,
               "Let the model decide when to call a tool (tool_choice \"auto\"); needs "
               "--tool-call-parser");
  cmd.add_option("--tool-call-parser", f.tool_call_parser,
                 "How tool calls are read from the output: hermes (Hermes, Qwen 2.5/3), "
                 "llama3_json (Llama 3.1-3.3), mistral (Mistral v0.3+)");
  for (const RefusedFlag& r : kRefused)
    cmd.add_option(r.name, f.refused[r.name], std::string("Not supported: ") + r.reason)
        ->expected(0, 1)
        ->group("Not supported (refused with the reason)");
}

void check_vllm_flags(const VllmFlags& f) {
  auto passed = [&](const char* name) { return f.app->count(name) > 0; };
  for (const RefusedFlag& r : kRefused)
    RELAYLLM_CHECK(!passed(r.name), "{} is not supported: {}", r.name, r.reason);
  RELAYLLM_CHECK(f.pipeline_parallel_size == 1,
                 "--pipeline-parallel-size {}: pipeline parallelism is not implemented; only 1 is "
                 "supported",
                 f.pipeline_parallel_size);
  RELAYLLM_CHECK(!(f.enable_log_requests && f.disable_log_requests),
                 "--enable-log-requests and --disable-log-requests contradict each other");
  RELAYLLM_CHECK(f.kv_cache_dtype == "auto",
                 "--kv-cache-dtype {}: not supported; the KV cache is kept in the compute dtype "
                 "(--dtype), only 'auto' is accepted",
                 f.kv_cache_dtype);
  const std::string& m = f.tokenizer_mode;
  RELAYLLM_CHECK(m == "auto" || m == "hf" || m == "slow",
                 "--tokenizer-mode {}: not supported; relayllm reads the Hugging Face "
                 "tokenizer.json (modes auto, hf, slow)",
                 m);
  if (!f.tool_call_parser.empty()) make_tool_call_format(f.tool_call_parser);  // a known name
  RELAYLLM_CHECK(!f.enable_auto_tool_choice || !f.tool_call_parser.empty(),
                 "--enable-auto-tool-choice needs --tool-call-parser (one of hermes, llama3_json, "
                 "mistral) to read the calls");
  if (f.trust_remote_code)
    spdlog::info("--trust-remote-code has no effect: relayllm never runs code from a model folder");
  if (passed("--swap-space"))
    spdlog::info(
        "--swap-space has no effect: preempted requests are recomputed, never swapped "
        "to CPU memory");
  if (passed("--uvicorn-log-level"))
    spdlog::info("--uvicorn-log-level has no effect: the HTTP server logs at --log-level");
}

std::vector<std::string> expand_vllm_short_flags(int argc, char** argv) {
  static const std::map<std::string, std::string> kLong = {{"-tp", "--tensor-parallel-size"},
                                                           {"-pp", "--pipeline-parallel-size"},
                                                           {"-dp", "--data-parallel-size"}};
  std::vector<std::string> out;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    std::string head = arg.substr(0, arg.find('='));
    auto it = kLong.find(head);
    out.push_back(it == kLong.end() ? arg : it->second + arg.substr(head.size()));
  }
  return out;
}

}  // namespace relayllm
