// A backend that runs another one op by op and records each op's time (from the
// inner backend's OpTimer, so device time on a device), bytes moved and FLOPs into
// an OpProfile. While the profile records it offers no graphs, so every step runs
// op by op; the gaps between ops, when the device waits for the host, are recorded
// as their own line. While it does not record, it only forwards.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "relayllm/backend/backend.h"
#include "relayllm/backend/op_profile.h"

namespace relayllm {

class ProfilingBackend final : public Backend {
 public:
  ProfilingBackend(std::unique_ptr<Backend> inner, std::shared_ptr<OpProfile> profile);
  ~ProfilingBackend() override;

  Backend& inner() { return *inner_; }

  std::string name() const override { return inner_->name(); }
  DType compute_dtype() const override { return inner_->compute_dtype(); }
  DType kv_dtype() const override { return inner_->kv_dtype(); }
  Tensor empty(std::vector<int64_t> shape, DType dtype) override {
    return inner_->empty(std::move(shape), dtype);
  }
  Tensor upload(std::span<const float> host, std::vector<int64_t> shape, DType dtype) override {
    return inner_->upload(host, std::move(shape), dtype);
  }
  void download(const Tensor& tensor, std::span<float> host) override;
  int32_t max_relay_levels() const override { return inner_->max_relay_levels(); }
  bool supports_weight_format(WeightFormat format) const override {
    return inner_->supports_weight_format(format);
  }
  Tensor upload_blocks(WeightFormat format, std::span<const std::byte> bytes,
                       std::vector<int64_t> shape) override {
    return inner_->upload_blocks(format, bytes, std::move(shape));
  }
  void begin_step(const BatchPlan& plan, const StepInfo& info = {}) override;
  std::unique_ptr<OpTimer> make_op_timer() override { return inner_->make_op_timer(); }
  double measure_copy_bandwidth() override { return inner_->measure_copy_bandwidth(); }
  bool supports_graphs() const override {
    return !profile_->recording() && inner_->supports_graphs();
  }
  void capture_begin() override { inner_->capture_begin(); }
  void capture_end(int64_t key) override { inner_->capture_end(key); }
  void capture_cancel() override { inner_->capture_cancel(); }
  bool replay(int64_t key) override { return inner_->replay(key); }

  void embedding(const Tensor& table, const BatchPlan& plan, Tensor& out) override;
  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override;
  void add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps,
                   Tensor& out) override;
  void linear(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor& out) override;
  Tensor fuse_rows(std::span<const Tensor> parts) override { return inner_->fuse_rows(parts); }
  void linear_parts(const Tensor& x, const Tensor& fused, std::span<const Tensor* const> biases,
                    std::span<Tensor* const> outs) override;
  void linear_silu_mul(const Tensor& x, const Tensor& gate_up, Tensor& gate, Tensor& up,
                       Tensor& out) override;
  void rope_write_kv(Tensor& q, Tensor& k, const Tensor& v, const Tensor& cos_sin, KvLayer& kv,
                     const BatchPlan& plan) override;
  void rope(Tensor& q, Tensor& k, const Tensor& cos_sin, const BatchPlan& plan) override;
  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override;
  void write_kv(const Tensor& k, const Tensor& v, KvLayer& kv, const BatchPlan& plan) override;
  void attention(const Tensor& q, const KvLayer& kv, const AttentionShape& shape,
                 const BatchPlan& plan, Tensor& out) override;
  void gather_logit_rows(const Tensor& x, const BatchPlan& plan, Tensor& out) override;
  void all_reduce_sum(Tensor& x, Communicator& comm) override;

  // Adds the ops timed since the last collect to the profile (waits for them).
  // Runs by itself after each step's download and before the next step.
  void collect();

 private:
  struct Pending {
    std::string label;
    double bytes = 0;
    double flops = 0;
  };
  template <typename Run>
  void timed(std::string label, double bytes, double flops, Run&& run);

  std::unique_ptr<Backend> inner_;
  std::shared_ptr<OpProfile> profile_;
  std::unique_ptr<OpTimer> timer_;
  std::vector<Pending> pending_;
  StepKind kind_ = StepKind::kPrefill;
};

// The bytes attention reads and writes for a plan: q and out once, each sequence's
// own KV once, and each prefix group's KV once (the relay ideal), and its FLOPs
// (QK^T and PV, causal within the own tokens). Exposed for the tests.
struct AttentionCost {
  double bytes = 0;
  double flops = 0;
};
AttentionCost attention_cost(const Tensor& q, const KvLayer& kv, const AttentionShape& shape,
                             const BatchPlan& plan);

}  // namespace relayllm
