// The reference backend: fp32 everywhere, multi-threaded loops, no tricks that
// could hide a wrong answer. It is what every other backend is tested against.
#pragma once

#include <memory>

#include "relayllm/backend/backend.h"
#include "relayllm/common/thread_pool.h"

namespace relayllm {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int num_threads = 0);

  std::string name() const override { return "cpu"; }
  DType compute_dtype() const override { return DType::kF32; }

  Tensor empty(std::vector<int64_t> shape, DType dtype) override;
  Tensor upload(std::span<const float> host, std::vector<int64_t> shape, DType dtype) override;
  void download(const Tensor& tensor, std::span<float> host) override;
  // The reference takes any depth of nested relay groups.
  int32_t max_relay_levels() const override { return 1 << 20; }
  void begin_step(const BatchPlan& plan, const StepInfo& info = {}) override {}

  void embedding(const Tensor& table, const BatchPlan& plan, Tensor& out) override;
  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override;
  void add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps,
                   Tensor& out) override;
  void linear(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor& out) override;
  void rope(Tensor& q, Tensor& k, const Tensor& cos_sin, const BatchPlan& plan) override;
  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override;
  void write_kv(const Tensor& k, const Tensor& v, KvLayer& kv, const BatchPlan& plan) override;
  void attention(const Tensor& q, const KvLayer& kv, const AttentionShape& shape,
                 const BatchPlan& plan, Tensor& out) override;
  void gather_logit_rows(const Tensor& x, const BatchPlan& plan, Tensor& out) override;

  ThreadPool& pool() { return pool_; }

 private:
  ThreadPool pool_;
};

}  // namespace relayllm
