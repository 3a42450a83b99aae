// A Llama-family model's weights on the host in fp32, named and shaped as in HF
// transformers checkpoints. Linear weights are [out_features, in_features] row-major.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "relayllm/model/model_config.h"

namespace relayllm {

class ThreadPool;

struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
  bool empty() const { return data.empty(); }
  int64_t numel() const;
};

struct LayerWeights {
  HostTensor input_norm, q_proj, k_proj, v_proj, o_proj;  // [out, in] row-major as HF
  HostTensor q_bias, k_bias, v_bias;                      // empty unless qkv_bias
  HostTensor q_norm, k_norm;                              // [head_dim], empty unless qk_norm
  HostTensor post_attention_norm, gate_proj, up_proj, down_proj;
};

struct ModelWeights {
  HostTensor embed_tokens;
  std::vector<LayerWeights> layers;
  HostTensor final_norm;
  HostTensor lm_head;  // empty when tie_word_embeddings: use embed_tokens
};

// One tensor the config calls for: its HF name, expected shape and kind.
enum class WeightKind { kLinear, kEmbedding, kNorm, kBias };
struct WeightSlot {
  std::string name;  // e.g. "model.layers.0.self_attn.q_proj.weight"
  std::vector<int64_t> shape;
  WeightKind kind;
  HostTensor* tensor;
};

// Every tensor `config` needs, in a fixed order, bound to its place in `weights`
// (whose layer list is resized to config.num_layers).
std::vector<WeightSlot> weight_slots(ModelWeights& weights, const ModelConfig& config);

// Loads model.safetensors or the sharded index from model_dir, converting F32/F16/BF16
// to fp32. Missing tensors and wrong shapes throw Error naming the file and tensor;
// tensors the config does not need (rotary inv_freq, a tied lm_head) are ignored.
// Conversion runs on `pool` when given, else on a pool of its own.
ModelWeights load_weights(const std::filesystem::path& model_dir, const ModelConfig& config,
                          ThreadPool* pool = nullptr);

// Random weights from the config alone, identical bytes for the same seed on any
// platform and thread count. Linear/embedding weights ~ U(-a, a), a = sqrt(3 / in_features)
// (unit variance in, unit variance out), norms 1 + U(-0.1, 0.1), biases U(-0.05, 0.05).
ModelWeights make_dummy_weights(const ModelConfig& config, uint64_t seed,
                                ThreadPool* pool = nullptr);

}  // namespace relayllm
