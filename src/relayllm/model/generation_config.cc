#include "relayllm/model/generation_config.h"

#include <nlohmann/json.hpp>

#include "relayllm/common/error.h"
#include "relayllm/common/json_fields.h"

namespace relayllm {

GenerationConfig parse_generation_config_json(const nlohmann::json& json,
                                              const std::string& source) {
  if (!json.is_object()) fail("{}: expected a JSON object at top level", source);
  GenerationConfig g;
  g.eos_token_ids = json_fields::get_token_ids(json, "eos_token_id", source);
  auto single_id = [&](const char* key) -> std::optional<int32_t> {
    auto ids = json_fields::get_token_ids(json, key, source);
    if (!ids) return std::nullopt;
    if (ids->size() != 1) fail("{}: field {} must be a single token id", source, key);
    return (*ids)[0];
  };
  g.bos_token_id = single_id("bos_token_id");
  g.pad_token_id = single_id("pad_token_id");
  g.do_sample = json_fields::get_bool(json, "do_sample", source);
  g.temperature = json_fields::get_double(json, "temperature", source);
  g.top_p = json_fields::get_double(json, "top_p", source);
  g.top_k = json_fields::get_integral(json, "top_k", source);
  g.repetition_penalty = json_fields::get_double(json, "repetition_penalty", source);
  g.max_new_tokens = json_fields::get_integral(json, "max_new_tokens", source);
  if (g.temperature && *g.temperature < 0)
    fail("{}: field temperature must be >= 0, got {}", source, *g.temperature);
  if (g.top_p && !(*g.top_p > 0 && *g.top_p <= 1))
    fail("{}: field top_p must be in (0, 1], got {}", source, *g.top_p);
  if (g.top_k && *g.top_k < 0) fail("{}: field top_k must be >= 0, got {}", source, *g.top_k);
  if (g.repetition_penalty && !(*g.repetition_penalty > 0))
    fail("{}: field repetition_penalty must be positive, got {}", source, *g.repetition_penalty);
  if (g.max_new_tokens && *g.max_new_tokens < 0)
    fail("{}: field max_new_tokens must be >= 0, got {}", source, *g.max_new_tokens);
  return g;
}

GenerationConfig parse_generation_config(const std::filesystem::path& path) {
  return parse_generation_config_json(json_fields::read_json_file(path), path.string());
}

std::optional<GenerationConfig> load_generation_config(const std::filesystem::path& model_dir) {
  std::filesystem::path path = model_dir / "generation_config.json";
  if (!std::filesystem::exists(path)) return std::nullopt;
  return parse_generation_config(path);
}

}  // namespace relayllm
