#include "relayllm/model/model_loader.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "relayllm/common/error.h"
#include "relayllm/formats/gguf_file.h"
#include "relayllm/model/gguf_model.h"
#include "relayllm/model/model_id.h"
#include "relayllm/model/model_limits.h"
#include "relayllm/model/tensor_parallel.h"
#include "relayllm/tokenizer/gguf_tokenizer.h"

namespace relayllm {

LoadFormat parse_load_format(const std::string& name) {
  if (name == "auto") return LoadFormat::kAuto;
  if (name == "safetensors") return LoadFormat::kSafetensors;
  if (name == "dummy") return LoadFormat::kDummy;
  fail("unknown --load-format '{}' (expected auto, safetensors or dummy)", name);
}

Tokenizer load_tokenizer(const std::filesystem::path& dir) {
  if (std::filesystem::is_regular_file(dir) && (dir.extension() == ".gguf" || is_gguf_file(dir)))
    return load_gguf_tokenizer(GgufFile(dir));
  RELAYLLM_CHECK(std::filesystem::is_directory(dir), "model folder {} does not exist",
                 dir.string());
  std::filesystem::path tokenizer_json = dir / "tokenizer.json";
  RELAYLLM_CHECK(std::filesystem::exists(tokenizer_json), "{}: file not found",
                 tokenizer_json.string());
  return Tokenizer::from_files(tokenizer_json, dir / "tokenizer_config.json");
}

namespace {

LoadedModel load_gguf_model(const std::filesystem::path& path, LoadFormat format, uint64_t seed,
                            const std::filesystem::path& tokenizer_dir,
                            const WeightFormatFilter& keep_formats, const ShardLayout* shard) {
  RELAYLLM_CHECK(format != LoadFormat::kSafetensors,
                 "{}: --load-format safetensors cannot read a GGUF file", path.string());
  auto start = std::chrono::steady_clock::now();
  GgufFile file(path);
  ModelConfig config = gguf_model_config(file);
  check_model_fits(config, path.string());
  Tokenizer tokenizer =
      tokenizer_dir.empty() ? load_gguf_tokenizer(file) : load_tokenizer(tokenizer_dir);
  RELAYLLM_CHECK(tokenizer.vocab_size() <= config.vocab_size,
                 "{}: the tokenizer has {} tokens but the model's vocab_size is {}", path.string(),
                 tokenizer.vocab_size(), config.vocab_size);
  bool random = format == LoadFormat::kDummy;
  std::optional<ShardLayout> layout;
  if (shard) layout = shard_layout(config, shard->rank, shard->size);  // checks the heads
  const ShardLayout* part = layout ? &*layout : nullptr;
  ModelWeights weights = random ? make_dummy_weights(config, seed, nullptr, part)
                                : load_gguf_weights(file, config, nullptr, keep_formats, part);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("loaded {} (GGUF v{}, {}, {} layers, hidden {}, vocab {}){} in {:.2f} s",
               path.string(), file.version(), config.architecture, config.num_layers,
               config.hidden_size, config.vocab_size, random ? " with random weights" : "",
               seconds);
  return LoadedModel{model_id_from_path(path, file.get_string("general.name").value_or("")),
                     std::move(config),
                     std::move(weights),
                     std::move(tokenizer),
                     std::nullopt,
                     random};
}

}  // namespace

LoadedModel load_model(const std::filesystem::path& dir, LoadFormat format, uint64_t seed,
                       const std::filesystem::path& tokenizer_dir,
                       const WeightFormatFilter& keep_formats, const ShardLayout* shard) {
  // A file named .gguf goes to the GGUF reader even when corrupt, for its precise error.
  if (std::filesystem::is_regular_file(dir) && (dir.extension() == ".gguf" || is_gguf_file(dir)))
    return load_gguf_model(dir, format, seed, tokenizer_dir, keep_formats, shard);
  auto start = std::chrono::steady_clock::now();
  RELAYLLM_CHECK(std::filesystem::is_directory(dir), "model folder {} does not exist",
                 dir.string());
  ModelConfig config = parse_model_config(dir / "config.json");
  check_model_fits(config, (dir / "config.json").string());
  std::optional<GenerationConfig> generation = load_generation_config(dir);
  if (generation && generation->eos_token_ids)
    for (int32_t id : *generation->eos_token_ids)
      if (std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), id) ==
          config.eos_token_ids.end())
        config.eos_token_ids.push_back(id);
  bool random = format == LoadFormat::kDummy;
  std::optional<ShardLayout> layout;
  if (shard) layout = shard_layout(config, shard->rank, shard->size);  // checks the heads
  const ShardLayout* part = layout ? &*layout : nullptr;
  ModelWeights weights = random ? make_dummy_weights(config, seed, nullptr, part)
                                : load_weights(dir, config, nullptr, keep_formats, part);
  Tokenizer tokenizer = load_tokenizer(tokenizer_dir.empty() ? dir : tokenizer_dir);
  RELAYLLM_CHECK(tokenizer.vocab_size() <= config.vocab_size,
                 "{}: the tokenizer has {} tokens but the model's vocab_size is {}",
                 (tokenizer_dir.empty() ? dir : tokenizer_dir).string(), tokenizer.vocab_size(),
                 config.vocab_size);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("loaded {} ({}, {} layers, hidden {}, vocab {}){} in {:.2f} s", dir.string(),
               config.architecture, config.num_layers, config.hidden_size, config.vocab_size,
               random ? " with random weights" : "", seconds);
  return LoadedModel{model_id_from_path(dir), std::move(config),     std::move(weights),
                     std::move(tokenizer),    std::move(generation), random};
}

}  // namespace relayllm
