// Everything a model folder (or a GGUF file) provides, loaded in one call:
// architecture, weights, tokenizer and generation defaults. Which model to load
// when none is given is the serving layer's business (serving/default_model.h).
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
  std::string
      name;  // model_id_from_path(), or "relayllm-tiny-random" for the built-in random model
  ModelConfig config;
  ModelWeights weights;
  Tokenizer tokenizer;
  std::optional<GenerationConfig> generation;
  bool random_weights = false;
};

// `dir` may also be a .gguf file: then architecture, weights (dequantized to fp32),
// tokenizer and chat template all come from it (kDummy keeps its config and tokenizer
// but draws random weights; tokenizer_dir, when given, replaces its tokenizer).
// Otherwise reads config.json, generation_config.json, tokenizer.json (+ tokenizer_config.json)
// and, unless format is kDummy, the safetensors checkpoint. Eos ids of
// generation_config.json are merged into config.eos_token_ids. The tokenizer comes
// from tokenizer_dir when given, else from dir.
// `keep_formats`: which block formats of a GGUF file, and which 16-bit float dtypes of a
// safetensors checkpoint, stay as they are (see load_gguf_weights, load_weights); empty:
// all weights in fp32.
// `shard` (tensor parallelism): only this rank's slices of the weights are read
// (tensor_parallel.h); the config stays the whole model's.
LoadedModel load_model(const std::filesystem::path& dir, LoadFormat format, uint64_t seed,
                       const std::filesystem::path& tokenizer_dir = {},
                       const WeightFormatFilter& keep_formats = {},
                       const ShardLayout* shard = nullptr);

// Only the tokenizer files of a model folder, or the tokenizer of a .gguf file.
Tokenizer load_tokenizer(const std::filesystem::path& dir);

}  // namespace relayllm
