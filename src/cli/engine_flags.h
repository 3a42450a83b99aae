// Command-line flags shared by the subcommands that run an engine, named as vLLM
// names them (and vllm-ra for the relay options).
#pragma once

#include <CLI/CLI.hpp>

#include "relayllm/engine/sampling_params.h"
#include "relayllm/serving/engine_builder.h"

namespace relayllm {

void add_engine_flags(CLI::App& app, EngineOptions& options);

// Sampling flags give the defaults of every request; only flags the user passed
// override the model's generation_config.json. resolve() checks the result (Error
// naming the first bad value), so a bad flag stops the command at startup.
struct SamplingFlags {
  SamplingParams values;
  CLI::App* app = nullptr;
  SamplingParams resolve(const SamplingParams& model_defaults) const;
};
void add_sampling_flags(CLI::App& app, SamplingFlags& flags);

}  // namespace relayllm
