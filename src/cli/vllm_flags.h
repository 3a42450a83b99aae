// vLLM's spellings of `serve` flags, so launch scripts written for `vllm serve`
// run unchanged: a positional MODEL, -tp/-pp (--tensor-parallel-size is an engine flag), the
// request/stats log switches, CORS lists, and flags whose meaning relayllm has in another form. A
// flag whose meaning relayllm lacks is refused with one line saying why, unless ignoring it cannot
// change any result (then it is accepted and a line says it has no effect).
#pragma once

#include <CLI/CLI.hpp>
#include <map>
#include <string>
#include <vector>

namespace relayllm {

struct VllmFlags {
  std::string positional_model;
  int pipeline_parallel_size = 1;
  bool enable_log_requests = false;
  bool disable_log_requests = false;
  bool disable_log_stats = false;
  int64_t max_log_len = -1;
  std::string log_level;
  std::string uvicorn_log_level;
  bool trust_remote_code = false;
  std::string kv_cache_dtype = "auto";
  double swap_space = 4;
  std::string generation_config = "auto";
  int32_t max_logprobs = 20;
  std::string tokenizer_mode = "auto";
  std::string allowed_origins = "[\"*\"]", allowed_methods = "[\"*\"]", allowed_headers = "[\"*\"]";
  bool allow_credentials = false;
  bool enable_auto_tool_choice = false;
  std::string tool_call_parser;
  std::map<std::string, std::string> refused;  // flag -> value given, for the refusal table
  CLI::App* app = nullptr;
};

void add_vllm_flags(CLI::App& serve, VllmFlags& flags);

// Checks what add_vllm_flags parsed: throws Error with one line for a refused flag
// or value, and logs one line for each accepted flag that has no effect here.
void check_vllm_flags(const VllmFlags& flags);

// "-tp 2" / "-tp=2" -> "--tensor-parallel-size 2" (and -pp, -O...): vLLM's
// multi-letter short flags, which CLI11 cannot declare, rewritten before parsing.
std::vector<std::string> expand_vllm_short_flags(int argc, char** argv);

}  // namespace relayllm
