// Runs the engine's steps on the model: eagerly, or, for decode steps on backends
// that support it (cuda), as captured graphs that are replayed with the next step's
// arrays. LlamaModel holds the layer math; this holds how a step is executed.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "relayllm/model/llama_model.h"

namespace relayllm {

class TpChannel;

// When decode steps run as captured graphs: steps whose rows are all single decode
// tokens, up to max_batch rows, run as the graph of the smallest bucket (1, 2, 4, 8,
// then multiples of 8) that holds them.
struct GraphPolicy {
  bool enabled = false;
  int32_t max_batch = 0;
};

class ModelRunner {
 public:
  explicit ModelRunner(LlamaModel& model) : model_(model) {}

  // Writes the plan's K/V into kv_cache and returns the logits of plan.logit_rows as
  // [rows, vocab] fp32 on the host, whichever way the step runs.
  void forward(const BatchPlan& plan, std::vector<KvLayer>& kv_cache, std::vector<float>& logits);

  void set_graph_policy(const GraphPolicy& policy) { policy_ = policy; }
  const GraphPolicy& graph_policy() const { return policy_; }
  // Tensor parallelism, rank 0: every forward first sends its plan to the other ranks,
  // which run the same forward on their shards (null: one rank).
  void set_leader(TpChannel* channel) { leader_ = channel; }
  // The bucket a decode step of `rows` rows runs in (rows <= max_batch).
  static int32_t graph_bucket(int32_t rows);
  // Decode steps that ran as graph replays (captures included), for tests and logs.
  int64_t graph_steps() const { return graph_steps_; }

 private:
  bool graph_eligible(const BatchPlan& plan) const;

  LlamaModel& model_;
  GraphPolicy policy_;
  TpChannel* leader_ = nullptr;
  std::unique_ptr<LlamaModel::Activations> graph_activations_;
  int64_t graph_steps_ = 0;
};

}  // namespace relayllm
