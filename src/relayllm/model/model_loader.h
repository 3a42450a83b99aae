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
  std::string name;  // folder path, or "relayllm-tiny-random" for the embedded default
  ModelConfig config;
  ModelWeights weights;
  Tokenizer tokenizer;
  std::optional<GenerationConfig> generation;
  bool random_weights = false;
};

// Reads config.json, generation_config.json, tokenizer.json (+ tokenizer_config.json)
// and, unless format is kDummy, the safetensors checkpoint. Eos ids of
// generation_config.json are merged into config.eos_token_ids. The tokenizer comes
// from tokenizer_dir when given, else from dir.
LoadedModel load_model(const std::filesystem::path& dir, LoadFormat format, uint64_t seed,
                       const std::filesystem::path& tokenizer_dir = {});

// Only the tokenizer files of a model folder.
Tokenizer load_tokenizer(const std::filesystem::path& dir);

// A tiny random-weight Llama with a byte-level tokenizer, built in memory.
LoadedModel make_embedded_default_model(uint64_t seed);

}  // namespace relayllm
