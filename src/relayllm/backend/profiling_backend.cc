#include "relayllm/backend/profiling_backend.h"

#include <fmt/format.h>

#include "relayllm/common/error.h"

namespace relayllm {

ProfilingBackend::ProfilingBackend(std::unique_ptr<Backend> inner,
                                   std::shared_ptr<OpProfile> profile)
    : inner_(std::move(inner)), profile_(std::move(profile)), timer_(inner_->make_op_timer()) {
  RELAYLLM_CHECK(profile_ != nullptr, "op profile: no profile to record into");
  if (profile_->copy_bandwidth() == 0)
    profile_->set_copy_bandwidth(inner_->measure_copy_bandwidth());
}

ProfilingBackend::~ProfilingBackend() {
  try {
    collect();
  } catch (...) {
    // A failed device makes the last step's times unreadable; the profile keeps the rest.
  }
}

template <typename Run>
void ProfilingBackend::timed(std::string label, double bytes, double flops, Run&& run) {
  if (!profile_->recording()) {
    run();
    return;
  }
  timer_->mark();
  run();
  timer_->mark();
  pending_.push_back({std::move(label), bytes, flops});
}

void ProfilingBackend::collect() {
  if (pending_.empty()) return;
  // Marks before and after each op: the intervals alternate between an op and the
  // gap to the next one (the device waiting for the host).
  std::vector<double> ms = timer_->read_ms();
  RELAYLLM_CHECK(ms.size() + 1 == 2 * pending_.size(), "op profile: {} intervals for {} ops",
                 ms.size(), pending_.size());
  profile_->add_step(kind_);
  double idle = 0;
  for (size_t i = 0; i < pending_.size(); ++i) {
    profile_->add_op(kind_, pending_[i].label, ms[2 * i], pending_[i].bytes, pending_[i].flops);
    if (i + 1 < pending_.size()) idle += ms[2 * i + 1];
  }
  profile_->add_op(kind_, OpProfile::kIdle, idle, 0, 0);
  pending_.clear();
}

void ProfilingBackend::begin_step(const BatchPlan& plan, const StepInfo& info) {
  collect();
  bool decode = !plan.sequences.empty();
  for (const PlannedSequence& seq : plan.sequences) decode = decode && seq.query_len == 1;
  kind_ = decode ? StepKind::kDecode : StepKind::kPrefill;
  // Its time includes the host building the step's arrays: the device waits for them.
  timed("step staging", 0, 0, [&] { inner_->begin_step(plan, info); });
}

void ProfilingBackend::download(const Tensor& tensor, std::span<float> host) {
  timed("logits to host", double(tensor.bytes()) + double(host.size_bytes()), 0,
        [&] { inner_->download(tensor, host); });
  collect();
}

void ProfilingBackend::embedding(const Tensor& table, const BatchPlan& plan, Tensor& out) {
  timed("embedding", 2.0 * double(out.bytes()), 0, [&] { inner_->embedding(table, plan, out); });
}

void ProfilingBackend::rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  timed("rmsnorm", double(x.bytes() + weight.bytes() + out.bytes()), 0,
        [&] { inner_->rmsnorm(x, weight, eps, out); });
}

void ProfilingBackend::add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& weight,
                                   float eps, Tensor& out) {
  timed("add_rmsnorm", double(2 * residual.bytes() + x.bytes() + weight.bytes() + out.bytes()), 0,
        [&] { inner_->add_rmsnorm(residual, x, weight, eps, out); });
}

void ProfilingBackend::linear(const Tensor& x, const Tensor& weight, const Tensor* bias,
                              Tensor& out) {
  // Labelled by the weight's shape [out features x in features]: projections of the
  // same shape cost the same, and the shapes tell them apart well enough.
  const double bytes =
      double(x.bytes() + weight.bytes() + out.bytes() + (bias ? bias->bytes() : 0));
  timed(fmt::format("linear {}x{}", weight.rows(), weight.cols()), bytes,
        2.0 * double(x.rows()) * double(weight.rows()) * double(weight.cols()),
        [&] { inner_->linear(x, weight, bias, out); });
}

void ProfilingBackend::linear_parts(const Tensor& x, const Tensor& fused,
                                    std::span<const Tensor* const> biases,
                                    std::span<Tensor* const> outs) {
  double bytes = double(x.bytes() + fused.bytes());
  for (const Tensor* out : outs) bytes += double(out->bytes());
  for (const Tensor* bias : biases) bytes += bias ? double(bias->bytes()) : 0;
  timed(fmt::format("linear {}x{} ({} fused)", fused.rows(), fused.cols(), outs.size()), bytes,
        2.0 * double(x.rows()) * double(fused.rows()) * double(fused.cols()),
        [&] { inner_->linear_parts(x, fused, biases, outs); });
}

void ProfilingBackend::linear_silu_mul(const Tensor& x, const Tensor& gate_up, Tensor& gate,
                                       Tensor& up, Tensor& out) {
  // The floor: x and the weight read, the product written (the scratch is the backend's choice).
  const double bytes = double(x.bytes() + gate_up.bytes() + out.bytes());
  timed(fmt::format("linear {}x{} + silu_mul", gate_up.rows(), gate_up.cols()), bytes,
        2.0 * double(x.rows()) * double(gate_up.rows()) * double(gate_up.cols()),
        [&] { inner_->linear_silu_mul(x, gate_up, gate, up, out); });
}

void ProfilingBackend::rope_write_kv(Tensor& q, Tensor& k, const Tensor& v, const Tensor& cos_sin,
                                     KvLayer& kv, const BatchPlan& plan) {
  const double table =
      double(plan.num_rows()) * double(cos_sin.cols()) * double(dtype_size(cos_sin.dtype));
  // q rotated in place; k and v read once, k written back, both written into the pool.
  const double bytes =
      2.0 * double(q.bytes()) + table + 3.0 * double(k.bytes()) + 2.0 * double(v.bytes());
  timed("rope + write_kv", bytes, 0, [&] { inner_->rope_write_kv(q, k, v, cos_sin, kv, plan); });
}

void ProfilingBackend::rope(Tensor& q, Tensor& k, const Tensor& cos_sin, const BatchPlan& plan) {
  const double table =
      double(plan.num_rows()) * double(cos_sin.cols()) * double(dtype_size(cos_sin.dtype));
  timed("rope", 2.0 * double(q.bytes() + k.bytes()) + table, 0,
        [&] { inner_->rope(q, k, cos_sin, plan); });
}

void ProfilingBackend::silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  timed("silu_mul", double(gate.bytes() + up.bytes() + out.bytes()), 0,
        [&] { inner_->silu_mul(gate, up, out); });
}

void ProfilingBackend::write_kv(const Tensor& k, const Tensor& v, KvLayer& kv,
                                const BatchPlan& plan) {
  // Reads each stored row of k and v and writes it once into the pool.
  const double row_bytes = k.rows() > 0 ? double(k.bytes() + v.bytes()) / double(k.rows()) : 0;
  timed("write_kv", 2.0 * row_bytes * double(plan.num_rows()), 0,
        [&] { inner_->write_kv(k, v, kv, plan); });
}

AttentionCost attention_cost(const Tensor& q, const KvLayer& kv, const AttentionShape& shape,
                             const BatchPlan& plan) {
  const double kv_token_bytes =
      2.0 * shape.num_kv_heads * shape.head_dim * double(dtype_size(kv.k.dtype));
  const double row_flops = 4.0 * shape.num_heads * shape.head_dim;  // per (query row, key) pair
  AttentionCost cost;
  cost.bytes = 2.0 * double(q.bytes());  // q read, out written (same shape and dtype)
  for (const PlannedSequence& seq : plan.sequences) {
    cost.bytes += kv_token_bytes * seq.context_len;
    // Row i of the new tokens sees the own tokens before it, itself included, and the prefix.
    const double q_len = seq.query_len, first = double(seq.context_len) - q_len + 1;
    const double pairs = q_len * first + q_len * (q_len - 1) / 2 + q_len * seq.position_offset;
    cost.flops += row_flops * pairs;
  }
  for (const PlannedPrefixGroup& group : plan.prefix_groups)
    cost.bytes += kv_token_bytes * group.prefix_len;
  return cost;
}

void ProfilingBackend::attention(const Tensor& q, const KvLayer& kv, const AttentionShape& shape,
                                 const BatchPlan& plan, Tensor& out) {
  const AttentionCost cost = attention_cost(q, kv, shape, plan);
  timed(plan.prefix_groups.empty() ? "attention" : "attention (relay)", cost.bytes, cost.flops,
        [&] { inner_->attention(q, kv, shape, plan, out); });
}

void ProfilingBackend::gather_logit_rows(const Tensor& x, const BatchPlan& plan, Tensor& out) {
  timed("gather_logit_rows", 2.0 * double(out.bytes()), 0,
        [&] { inner_->gather_logit_rows(x, plan, out); });
}

void ProfilingBackend::all_reduce_sum(Tensor& x, Communicator& comm) {
  // Bytes: the tensor once in and once out, the floor of a reduction in place.
  timed("all-reduce", 2.0 * double(x.bytes()), 0, [&] { inner_->all_reduce_sum(x, comm); });
}

}  // namespace relayllm
