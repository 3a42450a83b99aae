// A Llama-family model's weights on the host in fp32, named and shaped as in HF
// transformers checkpoints. Linear weights are [out_features, in_features] row-major.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "relayllm/backend/tensor.h"
#include "relayllm/model/model_config.h"

namespace relayllm {

class ThreadPool;
struct ShardLayout;

// Values in fp32 (`data`), or, for a weight kept in a block format the backend runs
// directly (a GGUF quantized tensor, 16-bit floats), the rows' bytes as in the file
// (`blocks`, `format` != kNone) and no `data`.
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
  WeightFormat format = WeightFormat::kNone;
  std::vector<std::byte> blocks;
  bool empty() const { return data.empty() && blocks.empty(); }
  int64_t numel() const;
};

// Which block formats a loader may keep as they are (the backend's
// supports_weight_format); empty: dequantize everything to fp32.
using WeightFormatFilter = std::function<bool(WeightFormat)>;

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
// to fp32. Linear and embedding tensors stored in BF16 or F16 stay 16-bit (`blocks`, format
// kBF16/kF16) when `keep` accepts that format and the tensor is read whole: a bf16 checkpoint
// then takes half the memory of its fp32 copy and the backend's half kernels read it. Missing
// tensors and wrong shapes throw Error naming the file and tensor; tensors the config does not
// need (rotary inv_freq, a tied lm_head) are ignored. Conversion runs on `pool` when given,
// else on a pool of its own. With `shard` (tensor parallelism), only this rank's slice of each
// sharded tensor is read and converted to fp32 (tensor_parallel.h); the result holds local
// shapes.
ModelWeights load_weights(const std::filesystem::path& model_dir, const ModelConfig& config,
                          ThreadPool* pool = nullptr, const WeightFormatFilter& keep = {},
                          const ShardLayout* shard = nullptr);

// Random weights from the config alone, identical bytes for the same seed on any
// platform and thread count. Linear/embedding weights ~ U(-a, a), a = sqrt(3 / in_features)
// (unit variance in, unit variance out), norms 1 + U(-0.1, 0.1), biases U(-0.05, 0.05).
// With `shard`, each tensor is drawn whole (so every rank's slices are those of the same
// full model) and cut at once: memory holds the local weights plus one full tensor.
ModelWeights make_dummy_weights(const ModelConfig& config, uint64_t seed,
                                ThreadPool* pool = nullptr, const ShardLayout* shard = nullptr);

}  // namespace relayllm
