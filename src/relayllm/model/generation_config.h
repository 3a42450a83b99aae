// Sampling defaults and stop tokens a checkpoint ships in generation_config.json.
// Every field is optional: absent means "use the engine's default".
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

namespace relayllm {

struct GenerationConfig {
  std::optional<std::vector<int32_t>> eos_token_ids;  // eos_token_id: int or list
  std::optional<int32_t> bos_token_id;
  std::optional<int32_t> pad_token_id;
  std::optional<bool> do_sample;
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int64_t> top_k;
  std::optional<double> repetition_penalty;
  std::optional<int64_t> max_new_tokens;
};

GenerationConfig parse_generation_config_json(const nlohmann::json& json,
                                              const std::string& source_name);
GenerationConfig parse_generation_config(const std::filesystem::path& generation_config_json);
// <model_dir>/generation_config.json, or nullopt when the folder has none.
std::optional<GenerationConfig> load_generation_config(const std::filesystem::path& model_dir);

}  // namespace relayllm
