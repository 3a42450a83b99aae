// Limits on what a model file may ask for, checked before anything is allocated. A config is
// data from whoever wrote the file: a field of 2^62 must be refused with its name, not turned
// into an overflowing size, a null table or a bad_alloc tens of seconds later.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "relayllm/model/model_config.h"

namespace relayllm {

// Far above every released model, far below int32 overflow in any per-token product.
constexpr int64_t kMaxPositions = int64_t(1) << 24;  // max_position_embeddings (16M tokens)
constexpr int64_t kMaxVocab = int64_t(1) << 24;      // vocab_size
constexpr int64_t kMaxHidden = int64_t(1) << 20;     // hidden_size, intermediate_size, head_dim
constexpr int64_t kMaxHeads = int64_t(1) << 16;      // num_attention_heads, num_key_value_heads
constexpr int64_t kMaxLayers = int64_t(1) << 12;     // num_hidden_layers (real models: < 200)

// The names of ModelConfig's fields in the file they came from (config.json or GGUF metadata),
// so errors name what the user can find in that file.
struct ConfigFieldNames {
  std::string vocab_size = "vocab_size", hidden_size = "hidden_size",
              intermediate_size = "intermediate_size", num_layers = "num_hidden_layers",
              num_heads = "num_attention_heads", num_kv_heads = "num_key_value_heads",
              head_dim = "head_dim", max_position_embeddings = "max_position_embeddings",
              rms_norm_eps = "rms_norm_eps", rope_theta = "rope_theta", rope_factor = "factor",
              sliding_window = "sliding_window";
};

// Every size within its limit, every real number finite and in range (rms_norm_eps in (0, 1],
// rope_theta in (1, 1e15], rope factors in (0, 1e6]). Throws Error "<source>: field X = v ...".
void validate_model_config(const ModelConfig& config, const std::string& source,
                           const ConfigFieldNames& names = {});

// Host memory the model takes once loaded: every weight in fp32 (as both loaders keep them)
// plus the rope table for max_positions. nullopt when the product overflows 64 bits.
std::optional<uint64_t> model_host_bytes(const ModelConfig& config, int64_t max_positions);

// Refuses a model that cannot fit in `available_bytes` of memory (0: this machine's physical
// memory), naming the memory it would need, before a single weight is allocated.
void check_model_fits(const ModelConfig& config, const std::string& source,
                      uint64_t available_bytes = 0);

// The layer index of a per-layer tensor name (`prefix` N `.`...), or nullopt for other names.
std::optional<int64_t> tensor_layer_index(const std::string& name, const std::string& prefix);

// Refuses tensors of layers beyond the configured count: a checkpoint holding more layers than
// its config says is inconsistent, and silently ignoring layers would run a different model.
void check_layer_tensors(const std::vector<std::string>& tensor_names, const std::string& prefix,
                         int64_t num_layers, const std::string& source,
                         const std::string& layer_field);

}  // namespace relayllm
