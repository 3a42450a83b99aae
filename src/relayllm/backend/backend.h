// The ops interface that the one model forward is written against. A backend
// owns its memory and executes ops; it never sees requests, only a BatchPlan.
// Shapes are row-major; "rows" means every dimension but the last.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "relayllm/backend/batch_plan.h"
#include "relayllm/backend/op_timer.h"
#include "relayllm/backend/tensor.h"

namespace relayllm {

class Communicator;

// One layer's paged KV: K and V, each [num_blocks, block_size, num_kv_heads, head_dim].
struct KvLayer {
  Tensor k;
  Tensor v;
};

struct AttentionShape {
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  float scale = 1.0f;  // softmax scale, 1/sqrt(head_dim) for the Llama family
};

// What a backend may prepare for a step besides the plan's arrays.
struct StepInfo {
  // The step's attention layout; num_heads 0 when the step runs no attention.
  AttentionShape attention;
  // Rows the step's tensors have: at least plan.num_rows(); rows past the plan's
  // are padding (a captured graph serves a bucket of batch sizes) whose KV is not
  // stored and whose attention output is zero. 0: exactly the plan's rows.
  int32_t padded_rows = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // The dtype activations, weights and KV are kept in.
  virtual DType compute_dtype() const = 0;
  // The dtype of the paged KV cache (KvLayer), which may be narrower than the compute
  // dtype (the CPU backend keeps fp16 KV and computes in fp32).
  virtual DType kv_dtype() const { return compute_dtype(); }

  // Memory. Contents of a new tensor are unspecified.
  virtual Tensor empty(std::vector<int64_t> shape, DType dtype) = 0;
  virtual Tensor upload(std::span<const float> host, std::vector<int64_t> shape, DType dtype) = 0;
  virtual void download(const Tensor& tensor, std::span<float> host) = 0;

  // Levels of nested relay groups the attention op takes per row (BatchPlan groups
  // with parents). Backends whose kernels take one level get flattened plans: the
  // outermost group stays a group, deeper shared blocks join each row's own range.
  virtual int32_t max_relay_levels() const { return 1; }
  // Weights kept in a block format (GGUF quantized blocks, 16-bit floats): whether the
  // backend's linear and embedding ops run on `format` directly. Loaders dequantize
  // what the backend does not take.
  virtual bool supports_weight_format(WeightFormat format) const { return false; }
  // A weight [rows, cols] whose rows are whole blocks of `format`, as laid out in the file.
  virtual Tensor upload_blocks(WeightFormat format, std::span<const std::byte> bytes,
                               std::vector<int64_t> shape);

  // Called once per step before any op, so a backend can stage the plan's arrays.
  // Ops size their work by their tensors' rows, which may exceed the plan's
  // (StepInfo::padded_rows).
  virtual void begin_step(const BatchPlan& plan, const StepInfo& info = {}) = 0;

  // Graph capture (optional): the ops issued between capture_begin and
  // capture_end are recorded under `key` instead of run; replay(key) runs them
  // again over the arrays staged by the latest begin_step. replay returns false
  // when nothing valid is recorded under key (never captured, or staging moved
  // since), and the caller captures again.
  virtual bool supports_graphs() const { return false; }
  virtual void capture_begin() {}
  virtual void capture_end(int64_t key) { (void)key; }
  // Ends a capture that failed midway, recording nothing.
  virtual void capture_cancel() {}
  virtual bool replay(int64_t key) {
    (void)key;
    return false;
  }

  // A timer for the op profile. The default reads the host clock, which is right for
  // backends whose ops finish before they return.
  virtual std::unique_ptr<OpTimer> make_op_timer() { return std::make_unique<HostOpTimer>(); }
  // Bytes per second of a large copy within the backend's memory (read + write),
  // the floor's bandwidth in the op profile; 0 when the backend has no measure.
  virtual double measure_copy_bandwidth() { return 0; }

  // out[r] = table[ids[r]]
  virtual void embedding(const Tensor& table, const BatchPlan& plan, Tensor& out) = 0;
  // out = x * rsqrt(mean(x^2) + eps) * weight, per row of length weight.numel().
  virtual void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) = 0;
  // residual += x; out = rmsnorm(residual). Fused because it runs twice per layer.
  virtual void add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps,
                           Tensor& out) = 0;
  // out[T, N] = x[T, K] * weight[N, K]^T (+ bias[N]); out may be float32 while x and
  // weight are 16-bit (logits).
  virtual void linear(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor& out) = 0;
  // Fused projections (optional). Weights that read the same input may be kept as one,
  // their rows stacked, so one pass over x computes them all (q/k/v; gate/up). Returns
  // the stacked weight, the parts' storage no longer needed, or an undefined tensor when
  // the backend keeps them apart (the default; then the ops below are never called).
  virtual Tensor fuse_rows(std::span<const Tensor> parts) {
    (void)parts;
    return {};
  }
  // outs[p] = x * part_p^T (+ biases[p], may be null) for a weight from fuse_rows; part p
  // has outs[p].cols() rows, in the order they were fused.
  virtual void linear_parts(const Tensor& x, const Tensor& fused,
                            std::span<const Tensor* const> biases, std::span<Tensor* const> outs);
  // out = silu(x * gate^T) * (x * up^T) for a fused [gate; up] weight (gate and up
  // rounded to the compute dtype first, as the separate ops round them); gate and up
  // [T, I] are scratch the backend may use.
  virtual void linear_silu_mul(const Tensor& x, const Tensor& gate_up, Tensor& gate, Tensor& up,
                               Tensor& out);
  // rope(q, k) then write_kv(k, v): one op so a backend may fuse them.
  virtual void rope_write_kv(Tensor& q, Tensor& k, const Tensor& v, const Tensor& cos_sin,
                             KvLayer& kv, const BatchPlan& plan) {
    rope(q, k, cos_sin, plan);
    write_kv(k, v, kv, plan);
  }
  // Rotates q [T, Hq, D] and k [T, Hk, D] in place at the plan's positions.
  // cos_sin is [max_positions, D] with cos in the first D/2 columns and sin in the rest
  // (the rotate-half convention of Hugging Face's Llama).
  virtual void rope(Tensor& q, Tensor& k, const Tensor& cos_sin, const BatchPlan& plan) = 0;
  // out = silu(gate) * up
  virtual void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  // Stores each row's k [T, Hk, D] and v into the paged pool at the plan's slots
  // (padding rows are not stored).
  virtual void write_kv(const Tensor& k, const Tensor& v, KvLayer& kv, const BatchPlan& plan) = 0;
  // out [T, Hq, D] = attention of q [T, Hq, D] over each sequence's own KV (causal)
  // merged with its relay prefix's KV (no mask) by log-sum-exp.
  virtual void attention(const Tensor& q, const KvLayer& kv, const AttentionShape& shape,
                         const BatchPlan& plan, Tensor& out) = 0;
  // out[i] = x[rows[i]] for the plan's logit rows.
  virtual void gather_logit_rows(const Tensor& x, const BatchPlan& plan, Tensor& out) = 0;

  // Tensor parallelism: x becomes the sum of x over every rank of `comm`, in place, issued
  // in op order (a device backend on its compute stream, so a captured graph holds it).
  // The default refuses: a backend offers it only where it was tested.
  virtual void all_reduce_sum(Tensor& x, Communicator& comm);
};

}  // namespace relayllm
