// The architecture of a Llama-family checkpoint, read from its config.json.
// Llama 2/3, Mistral, Qwen 2 and Qwen 3 differ only in the flags below, so one
// forward implementation serves them all.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

namespace relayllm {

enum class RopeType { kDefault, kLinear, kLlama3, kDynamic };

struct RopeConfig {
  RopeType type = RopeType::kDefault;
  double theta = 10000;
  double factor = 1;
  double low_freq_factor = 1, high_freq_factor = 4;  // llama3 only
  int64_t original_max_position_embeddings = 8192;   // llama3 only
};

struct ModelConfig {
  std::string architecture;  // e.g. "LlamaForCausalLM"
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0, num_layers = 0, num_heads = 0,
          num_kv_heads = 0, head_dim = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;    // Qwen 2: q/k/v projections carry a bias
  bool qk_norm = false;     // Qwen 3: RMSNorm over each head of q and k before rope
  std::string torch_dtype;  // "float32", "bfloat16", ... as stored; empty when absent
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;  // config.json's eos_token_id (int or list)
  // Mistral v0.1 attends to the last `sliding_window` tokens only; unset means full attention.
  std::optional<int64_t> sliding_window;
};

// Reads <model_dir>/config.json (or any config.json path). Throws Error naming the file
// and the field for a missing file, bad JSON, missing or invalid fields, an unknown
// architecture or an unsupported rope type.
ModelConfig parse_model_config(const std::filesystem::path& config_json);
ModelConfig parse_model_config_json(const nlohmann::json& json, const std::string& source_name);

// Rope inverse frequencies (head_dim / 2 of them) computed with HF transformers'
// formulas, in double precision. For kDynamic this is the static case (sequence
// length <= max_position_embeddings), which equals the default frequencies.
std::vector<double> rope_inverse_frequencies(const ModelConfig& config);
// Dynamic NTK for a sequence of seq_len tokens; other rope types ignore seq_len.
std::vector<double> rope_inverse_frequencies(const ModelConfig& config, int64_t seq_len);

const char* rope_type_name(RopeType type);

}  // namespace relayllm
