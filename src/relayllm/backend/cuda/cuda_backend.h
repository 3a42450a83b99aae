// The CUDA backend: bf16/fp16 storage with fp32 accumulation, GEMMs through
// cuBLASLt, attention through the project's own paged kernels (cuda_attention.cu).
// All work runs on one stream owned by the backend; download() synchronises. The per-step arrays
// live at fixed device addresses (step_staging.h), so decode steps can be captured as CUDA graphs
// and replayed. This header has no CUDA includes so that host-only code can construct one.
#pragma once

#include <cstddef>
#include <memory>

#include "relayllm/backend/backend.h"
#include "relayllm/backend/cuda/attention_work.h"

namespace relayllm {

struct CudaBackendOptions {
  int device = 0;
  DType dtype = DType::kBF16;  // activations, weights and KV
  bool split_kv = true;        // split long KV ranges over several CTAs (off only for tests)
  // Attention work-list tuning (see attention_work.h): long KV ranges are split so
  // that the step's tokens would make about items_per_sm narrow items per
  // multiprocessor, none shorter than min_split tokens (a sweep of 4/8/16 x 64/128 on
  // an H100: bench/results/).
  int32_t attention_items_per_sm = 8;
  int32_t attention_min_split = 64;
  // FP8 linear ops (WeightFormat::kFP8, sm_89+): per-row weight and per-token activation
  // scales applied by cuBLASLt's outer-vector scale modes; false (or a cuBLASLt that finds no
  // algorithm for them) runs a unit-scale FP8 GEMM into fp32 and a rescale kernel.
  bool fp8_outer_vector_scales = true;
  // FP8 linear ops on at most this many rows (decode) run the project's matrix-vector kernel,
  // which streams the weight at full memory width (cuda_fp8.cuh; at most kFp8GemvMaxTokens);
  // 0: always cuBLASLt.
  int32_t fp8_gemv_max_tokens = 4;
  // ... in one launch with the activation quantization where the rows' codes fit a CTA's shared
  // memory (false: a quantize kernel, then the matrix-vector kernel).
  bool fp8_fused_gemv = true;
  // Projections of at most this many rows run on the weight-streaming kernel
  // (cuda_skinny_gemm.cuh, up to 32), larger ones on cuBLASLt; 0: cuBLASLt always.
  // The environment variable RELAYLLM_CUDA_SKINNY_GEMM_ROWS overrides it.
  int32_t skinny_gemm_max_rows = 8;
  // Keep q/k/v and gate/up as stacked weights (Backend::fuse_rows), with silu_mul in
  // the gate/up projection's epilogue where the skinny kernel runs it.
  // RELAYLLM_CUDA_FUSE_WEIGHTS=0 turns it off.
  bool fuse_weights = true;
  // Launch the skinny GEMM as a programmatic dependent of the kernel before it (sm_90+),
  // so its weights stream while that kernel ends. RELAYLLM_CUDA_PDL=1 turns it on.
  bool programmatic_launch = false;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaBackendOptions& options = {});
  ~CudaBackend() override;

  std::string name() const override { return "cuda"; }
  DType compute_dtype() const override { return dtype_; }
  // kFP8 on GPUs with FP8 tensor cores (sm_89 and newer).
  bool supports_weight_format(WeightFormat format) const override;
  Tensor upload_blocks(WeightFormat format, std::span<const std::byte> bytes,
                       std::vector<int64_t> shape) override;

  Tensor empty(std::vector<int64_t> shape, DType dtype) override;
  Tensor upload(std::span<const float> host, std::vector<int64_t> shape, DType dtype) override;
  void download(const Tensor& tensor, std::span<float> host) override;
  // Nested relay groups of any depth: each level is one more range of its rows'
  // outputs in the work list (attention_work.h), merged with the others by lse.
  int32_t max_relay_levels() const override { return 1 << 20; }
  void begin_step(const BatchPlan& plan, const StepInfo& info = {}) override;
  bool supports_graphs() const override;
  void capture_begin() override;
  void capture_end(int64_t key) override;
  void capture_cancel() override;
  bool replay(int64_t key) override;
  std::unique_ptr<OpTimer> make_op_timer() override;
  // 256 MiB each way: large enough that launch costs vanish, small enough to fit
  // beside a KV pool sized by --gpu-memory-utilization.
  double measure_copy_bandwidth() override { return measure_copy_bandwidth(size_t(256) << 20, 8); }
  // Bytes per second of device-to-device copies of `bytes` (bytes read and written
  // both counted): the median of `copies` timed copies after three that warm up;
  // 0 when the two buffers do not fit in free memory.
  double measure_copy_bandwidth(size_t bytes, int copies);

  void embedding(const Tensor& table, const BatchPlan& plan, Tensor& out) override;
  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override;
  void add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps,
                   Tensor& out) override;
  void linear(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor& out) override;
  Tensor fuse_rows(std::span<const Tensor> parts) override;
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

  // Benchmarks' A/B switches on one loaded model (captured graphs are dropped): the
  // skinny kernel's row limit (0: cuBLASLt always); the decode row kernels (rope_write_kv
  // as one kernel, the norms with rows in registers; off: the loop kernels); programmatic
  // launches. Stacked weights stay stacked (cuBLASLt then runs one GEMM per part).
  void set_skinny_gemm_rows(int32_t rows);
  void set_decode_row_kernels(bool fused);
  void set_programmatic_launch(bool on);
  // Downloads through a pinned bounce buffer (default) or straight into the caller's
  // pageable memory.
  void set_pinned_download(bool on);
  int32_t skinny_gemm_rows() const;

  // Device memory not yet taken, in bytes (for sizing the KV pool); the pool's cached free
  // blocks are given back first, so they count as free.
  size_t free_memory() const;
  size_t total_memory() const;
  // Waits for all queued work; benchmarks time around it.
  void synchronize();
  // The backend's stream, as a cudaStream_t.
  void* stream() const;
  // How the latest FP8 linear op ran (for tests and benchmarks): "fused-gemv", "gemv",
  // "outer-vector" (cuBLASLt with outer-vector scales) or "unit+rescale".
  const char* last_fp8_path() const;
  // The work list attention runs for `plan` in this layout, summarised (for benchmarks).
  cuda::AttentionWorkSummary attention_work_summary(const BatchPlan& plan,
                                                    const AttentionShape& shape);

 private:
  void linear_fp8(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor& out);
  // Whether a projection of t rows takes the skinny kernel.
  bool skinny(int64_t t, int64_t k, const void* x, const void* w) const;
  // out [t, n] = x [t, k] * w [n, k]^T (+ bias) through cuBLASLt.
  void gemm(const void* x, const void* w, int64_t t, int64_t n, int64_t k, const void* bias,
            void* out, DType out_dtype);

  struct Impl;
  std::unique_ptr<Impl> impl_;
  DType dtype_;
};

// True when the CUDA runtime sees at least one device.
bool cuda_device_available();
// GPUs visible to this process (0 when none or no driver).
int cuda_device_count();

}  // namespace relayllm
