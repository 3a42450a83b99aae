#include "relayllm/model/model_loader.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "relayllm/common/error.h"

namespace relayllm {

LoadFormat parse_load_format(const std::string& name) {
  if (name == "auto") return LoadFormat::kAuto;
  if (name == "safetensors") return LoadFormat::kSafetensors;
  if (name == "dummy") return LoadFormat::kDummy;
  fail("unknown --load-format '{}' (expected auto, safetensors or dummy)", name);
}

Tokenizer load_tokenizer(const std::filesystem::path& dir) {
  RELAYLLM_CHECK(std::filesystem::is_directory(dir), "model folder {} does not exist", dir.string());
  std::filesystem::path tokenizer_json = dir / "tokenizer.json";
  RELAYLLM_CHECK(std::filesystem::exists(tokenizer_json), "{}: file not found", tokenizer_json.string());
  return Tokenizer::from_files(tokenizer_json, dir / "tokenizer_config.json");
}

LoadedModel load_model(const std::filesystem::path& dir, LoadFormat format, uint64_t seed,
                       const std::filesystem::path& tokenizer_dir) {
  auto start = std::chrono::steady_clock::now();
  RELAYLLM_CHECK(std::filesystem::is_directory(dir), "model folder {} does not exist", dir.string());
  ModelConfig config = parse_model_config(dir / "config.json");
  std::optional<GenerationConfig> generation = load_generation_config(dir);
  if (generation && generation->eos_token_ids)
    for (int32_t id : *generation->eos_token_ids)
      if (std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), id) ==
          config.eos_token_ids.end())
        config.eos_token_ids.push_back(id);
  bool random = format == LoadFormat::kDummy;
  ModelWeights weights = random ? make_dummy_weights(config, seed) : load_weights(dir, config);
  Tokenizer tokenizer = load_tokenizer(tokenizer_dir.empty() ? dir : tokenizer_dir);
  RELAYLLM_CHECK(tokenizer.vocab_size() <= config.vocab_size,
                 "{}: the tokenizer has {} tokens but the model's vocab_size is {}",
                 (tokenizer_dir.empty() ? dir : tokenizer_dir).string(), tokenizer.vocab_size(),
                 config.vocab_size);
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("loaded {} ({}, {} layers, hidden {}, vocab {}){} in {:.2f} s", dir.string(),
               config.architecture, config.num_layers, config.hidden_size, config.vocab_size,
               random ? " with random weights" : "", seconds);
  return LoadedModel{dir.string(), std::move(config), std::move(weights), std::move(tokenizer),
                     std::move(generation), random};
}

LoadedModel make_embedded_default_model(uint64_t seed) {
  Tokenizer tokenizer = Tokenizer::make_byte_tokenizer();
  ModelConfig config;
  config.architecture = "LlamaForCausalLM";
  config.vocab_size = tokenizer.vocab_size();
  config.hidden_size = 64;
  config.intermediate_size = 128;
  config.num_layers = 2;
  config.num_heads = 4;
  config.num_kv_heads = 2;
  config.head_dim = 16;
  config.rms_norm_eps = 1e-5;
  config.max_position_embeddings = 4096;
  config.torch_dtype = "float32";
  config.bos_token_id = tokenizer.bos_token_id();
  if (auto eos = tokenizer.eos_token_id()) config.eos_token_ids = {*eos};
  spdlog::warn("no --model given: using the embedded default, a tiny Llama with RANDOM weights "
               "(its output is meaningless; pass --model DIR for a real model)");
  ModelWeights weights = make_dummy_weights(config, seed);
  return LoadedModel{"relayllm-tiny-random", std::move(config), std::move(weights),
                     std::move(tokenizer), std::nullopt, true};
}

}  // namespace relayllm
