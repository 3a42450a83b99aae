// The one Llama-family forward (Llama 2/3, Mistral, Qwen 2/3), written against the
// Backend ops. Architecture differences are flags in ModelConfig: qkv bias (Qwen 2),
// per-head q/k RMSNorm (Qwen 3), tied embeddings, rope variants.
#pragma once

#include <memory>
#include <vector>

#include "relayllm/backend/backend.h"
#include "relayllm/model/model_config.h"
#include "relayllm/model/model_weights.h"
#include "relayllm/model/tensor_parallel.h"

namespace relayllm {

class Communicator;

class LlamaModel {
 public:
  // Uploads the weights to the backend; host weights may be dropped afterwards.
  // max_positions sizes the rope table. With `comm` of several ranks (tensor
  // parallelism), `weights` are this rank's slices (tensor_parallel.h) of the model
  // `config` describes: attention and the MLP run on the local heads and columns, and
  // the o and down projections' partial sums are all-reduced; only rank 0 computes logits.
  LlamaModel(const ModelConfig& config, const ModelWeights& weights, Backend& backend,
             int64_t max_positions, Communicator* comm = nullptr);

  const ModelConfig& config() const { return config_; }
  Backend& backend() { return backend_; }

  // One paged K/V pair per layer, each [num_blocks, block_size, num_kv_heads, head_dim].
  std::vector<KvLayer> allocate_kv_cache(int32_t num_blocks, int32_t block_size);
  size_t kv_bytes_per_block(int32_t block_size) const;

  // One eager step: runs every layer over the plan's rows, writing their K/V into
  // kv_cache, and returns the logits of plan.logit_rows as [rows, vocab] fp32 on the
  // host. (The engine's ModelRunner also replays decode steps as graphs.)
  void forward(const BatchPlan& plan, std::vector<KvLayer>& kv_cache, std::vector<float>& logits);

  // The pieces a step runner composes.
  // Every intermediate of one step; a graph's are views of one set sized for the largest bucket.
  struct Activations {
    Tensor residual, normed, q, k, v, attn, proj, gate, up, act, selected, logits;
  };
  Activations make_activations(int64_t rows, int64_t logit_rows);
  static Activations first_rows(const Activations& all, int64_t rows);
  // Issues every op of the step into `a` (logits end in a.logits); begin_step comes first.
  void run(const BatchPlan& plan, std::vector<KvLayer>& kv_cache, Activations& a);
  // Checks the step's token ids and positions (replayed graphs skip the ops' own checks).
  void validate(const BatchPlan& plan) const;
  const AttentionShape& attention_shape() const { return attention_shape_; }
  const ShardLayout& shard() const { return shard_; }

 private:
  struct Layer {
    Tensor input_norm, q_proj, k_proj, v_proj, o_proj, q_bias, k_bias, v_bias, q_norm, k_norm;
    Tensor post_attention_norm, gate_proj, up_proj, down_proj;
    // Stacked [q; k; v] and [gate; up] where the backend fuses them (Backend::fuse_rows);
    // the separate weights are then dropped.
    Tensor qkv_proj, gate_up_proj;
  };

  Tensor upload(const HostTensor& host);

  // Partial sums of a row-parallel projection become the full output on every rank.
  void all_reduce(Tensor& x);

  ModelConfig config_;
  Backend& backend_;
  Communicator* comm_ = nullptr;  // null or one rank: no all-reduce
  ShardLayout shard_;
  Tensor embed_tokens_;
  std::vector<Layer> layers_;
  Tensor final_norm_;
  Tensor lm_head_;  // shares embed_tokens_ storage when tied
  Tensor rope_cos_sin_;
  AttentionShape attention_shape_;
};

}  // namespace relayllm
