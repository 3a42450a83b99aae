#include "relayllm/engine/model_runner.h"

#include "relayllm/common/error.h"
#include "relayllm/engine/tp_channel.h"

namespace relayllm {

int32_t ModelRunner::graph_bucket(int32_t rows) {
  if (rows <= 1) return 1;
  if (rows <= 2) return 2;
  if (rows <= 4) return 4;
  return (rows + 7) / 8 * 8;
}

bool ModelRunner::graph_eligible(const BatchPlan& plan) const {
  if (!policy_.enabled || !model_.backend().supports_graphs()) return false;
  if (plan.num_rows() == 0 || plan.num_rows() > policy_.max_batch) return false;
  if (plan.logit_rows.size() != size_t(plan.num_rows())) return false;
  for (const PlannedSequence& seq : plan.sequences)
    if (seq.query_len != 1) return false;
  return true;
}

void ModelRunner::forward(const BatchPlan& plan, std::vector<KvLayer>& kv_cache,
                          std::vector<float>& logits) {
  if (leader_) {
    // Checked before it leaves: a plan every rank would refuse never starts a step.
    model_.validate(plan);
    TpMessage step;
    step.kind = TpMessage::Kind::kStep;
    step.plan = plan;
    step.policy = policy_;
    leader_->send(step);
  }
  if (!graph_eligible(plan)) {
    model_.forward(plan, kv_cache, logits);
    return;
  }
  model_.validate(plan);
  Backend& be = model_.backend();
  const int64_t n = int64_t(plan.logit_rows.size());
  const int32_t bucket = graph_bucket(plan.num_rows());
  be.begin_step(plan, StepInfo{model_.attention_shape(), bucket});
  if (!graph_activations_) {
    const int64_t largest = graph_bucket(policy_.max_batch);
    graph_activations_ =
        std::make_unique<LlamaModel::Activations>(model_.make_activations(largest, largest));
  }
  LlamaModel::Activations a = LlamaModel::first_rows(*graph_activations_, bucket);
  if (!be.replay(bucket)) {
    be.capture_begin();
    try {
      model_.run(plan, kv_cache, a);
    } catch (...) {
      be.capture_cancel();
      throw;
    }
    be.capture_end(bucket);
    RELAYLLM_CHECK(be.replay(bucket), "{} backend: graph of bucket {} was not recorded", be.name(),
                   bucket);
  }
  ++graph_steps_;
  if (model_.shard().rank != 0) {  // logits exist on rank 0 only
    logits.clear();
    return;
  }
  logits.resize(size_t(n * model_.config().vocab_size));  // the download writes every value
  Tensor real = a.logits;
  real.shape[0] = n;  // padding rows' logits stay on the device
  be.download(real, logits);
}

}  // namespace relayllm
