// The one Llama-family forward (Llama 2/3, Mistral, Qwen 2/3), written against the
// Backend ops. Architecture differences are flags in ModelConfig: qkv bias (Qwen 2),
// per-head q/k RMSNorm (Qwen 3), tied embeddings, rope variants.
#pragma once

#include <memory>
#include <vector>

#include "relayllm/backend/backend.h"
#include "relayllm/model/model_config.h"
#include "relayllm/model/model_weights.h"

namespace relayllm {

// When decode steps run as captured graphs (backends that support them): steps
// whose rows are all single decode tokens, up to max_batch rows, run as the graph
// of the smallest bucket (1, 2, 4, 8, then multiples of 8) that holds them.
struct GraphPolicy {
  bool enabled = false;
  int32_t max_batch = 0;
};

class LlamaModel {
 public:
  // Uploads the weights to the backend; host weights may be dropped afterwards.
  // max_positions sizes the rope table.
  LlamaModel(const ModelConfig& config, const ModelWeights& weights, Backend& backend,
             int64_t max_positions);

  const ModelConfig& config() const { return config_; }
  Backend& backend() { return backend_; }

  // One paged K/V pair per layer, each [num_blocks, block_size, num_kv_heads, head_dim].
  std::vector<KvLayer> allocate_kv_cache(int32_t num_blocks, int32_t block_size);
  size_t kv_bytes_per_block(int32_t block_size) const;

  // Runs every layer over the plan's rows, writing their K/V into kv_cache, and
  // returns the logits of plan.logit_rows as [rows, vocab] fp32 on the host.
  void forward(const BatchPlan& plan, std::vector<KvLayer>& kv_cache, std::vector<float>& logits);

  void set_graph_policy(const GraphPolicy& policy) { graph_policy_ = policy; }
  // The bucket a decode step of `rows` rows runs in (rows <= max_batch).
  static int32_t graph_bucket(int32_t rows);
  // Decode steps that ran as graph replays (captures included), for tests and logs.
  int64_t graph_steps() const { return graph_steps_; }

 private:
  // Every intermediate of one step; a graph's are views of one set sized for the largest bucket.
  struct Activations {
    Tensor residual, normed, q, k, v, attn, proj, gate, up, act, selected, logits;
  };
  Activations make_activations(int64_t rows, int64_t logit_rows);
  static Activations first_rows(const Activations& all, int64_t rows);
  // Issues every op of the step into `a` (logits end in a.logits).
  void run(const BatchPlan& plan, std::vector<KvLayer>& kv_cache, Activations& a);
  bool graph_eligible(const BatchPlan& plan) const;
  void validate(const BatchPlan& plan) const;

  struct Layer {
    Tensor input_norm, q_proj, k_proj, v_proj, o_proj, q_bias, k_bias, v_bias, q_norm, k_norm;
    Tensor post_attention_norm, gate_proj, up_proj, down_proj;
  };

  Tensor upload(const HostTensor& host);

  ModelConfig config_;
  Backend& backend_;
  Tensor embed_tokens_;
  std::vector<Layer> layers_;
  Tensor final_norm_;
  Tensor lm_head_;  // shares embed_tokens_ storage when tied
  Tensor rope_cos_sin_;
  AttentionShape attention_shape_;
  GraphPolicy graph_policy_;
  std::unique_ptr<Activations> graph_activations_;
  int64_t graph_steps_ = 0;
};

}  // namespace relayllm
