// The CPU backend: fp32 activations and accumulation, multi-threaded loops; the KV cache
// in fp32 (reference) or fp16. Weights are
// fp32 (the reference path, what every other backend and kernel is tested against) or,
// when the loader keeps them so, GGUF block formats and 16-bit floats run directly by the
// SIMD kernels of quant_kernels.h.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "relayllm/backend/backend.h"
#include "relayllm/backend/cpu/quant_kernels.h"
#include "relayllm/common/thread_pool.h"

namespace relayllm {

struct CpuBackendOptions {
  int num_threads = 0;        // 0: one per usable CPU
  bool block_weights = true;  // false: fp32 weights only (the reference path)
  std::string kernels;        // quantized kernel table: "" or "auto" (best for this CPU),
                              // "portable", "avx2", "avx512vnni"
  bool pin_threads = false;   // bind worker i to the i-th usable CPU
  // Linear ops on block weights over at least this many rows (prefill) dequantize weight
  // panels to fp32 and multiply them by OpenBLAS's sgemm, which beats the integer kernels
  // there (measured: bench/results/cpu_prefill_2026-12-05.md); fewer rows (decode) stay on
  // the integer kernels, which read 4-8x fewer bytes. 0: never. A build without OpenBLAS
  // always uses the integer kernels.
  int sgemm_min_rows = 16;
  // The paged KV cache: float16 halves its bytes (attention reads every cached token each
  // decode step); products and sums stay fp32. float32 is the reference.
  DType kv_dtype = DType::kF32;
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int num_threads = 0);
  explicit CpuBackend(const CpuBackendOptions& options);

  std::string name() const override { return "cpu"; }
  DType compute_dtype() const override { return DType::kF32; }
  DType kv_dtype() const override { return kv_dtype_; }

  Tensor empty(std::vector<int64_t> shape, DType dtype) override;
  Tensor upload(std::span<const float> host, std::vector<int64_t> shape, DType dtype) override;
  void download(const Tensor& tensor, std::span<float> host) override;
  // The reference takes any depth of nested relay groups.
  int32_t max_relay_levels() const override { return 1 << 20; }
  // FP8 weights run on the fp32 reference path too: their op is the reference the CUDA
  // backend's FP8 GEMM is tested against.
  bool supports_weight_format(WeightFormat format) const override {
    return format == WeightFormat::kFP8 || (block_weights_ && format != WeightFormat::kNone);
  }
  Tensor upload_blocks(WeightFormat format, std::span<const std::byte> bytes,
                       std::vector<int64_t> shape) override;
  void begin_step(const BatchPlan& plan, const StepInfo& info = {}) override {}
  // A 64 MiB memcpy on the pool (read + write bytes per second), best of 3: the ceiling
  // the op profile's floor uses (decode streams the weights once per step).
  double measure_copy_bandwidth() override;

  void embedding(const Tensor& table, const BatchPlan& plan, Tensor& out) override;
  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override;
  void add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps,
                   Tensor& out) override;
  void linear(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor& out) override;
  // Stacked weights (cpu_fused.cc): any one format. On the block kernels (decode) the
  // activations are quantized once for all parts and the parts' rows share one threaded
  // loop (gate and up rows in pairs, the silu product written at once); elsewhere each
  // part runs as its own linear op. Either way the numbers are those of separate weights.
  Tensor fuse_rows(std::span<const Tensor> parts) override;
  void linear_parts(const Tensor& x, const Tensor& fused, std::span<const Tensor* const> biases,
                    std::span<Tensor* const> outs) override;
  void linear_silu_mul(const Tensor& x, const Tensor& gate_up, Tensor& gate, Tensor& up,
                       Tensor& out) override;
  void rope(Tensor& q, Tensor& k, const Tensor& cos_sin, const BatchPlan& plan) override;
  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override;
  void write_kv(const Tensor& k, const Tensor& v, KvLayer& kv, const BatchPlan& plan) override;
  void attention(const Tensor& q, const KvLayer& kv, const AttentionShape& shape,
                 const BatchPlan& plan, Tensor& out) override;
  void gather_logit_rows(const Tensor& x, const BatchPlan& plan, Tensor& out) override;
  void all_reduce_sum(Tensor& x, Communicator& comm) override;

  ThreadPool& pool() { return pool_; }
  const cpu_quant::QuantKernels& kernels() const { return *kernels_; }
  // Rows from which linear ops on block weights run as sgemm; 0 when they never do.
  int sgemm_min_rows() const { return sgemm_min_rows_; }

 private:
  // One weight row of a block format dotted with activation row r: the rows quantized once
  // per op (act_) for the quantized formats, read as fp32 for F16/BF16.
  struct BlockDot {
    cpu_quant::QuantDotFn quant = nullptr;
    cpu_quant::HalfDotFn half = nullptr;
    const cpu_quant::ActBlock* act = nullptr;
    const float* x = nullptr;
    int64_t k = 0, blocks = 0;
    float operator()(const std::byte* row, int64_t r) const {
      return quant ? quant(k, row, act + r * blocks) : half(k, row, x + r * k);
    }
  };
  // Whether a linear op on `weight` over `t` rows runs on the block kernels (not fp32,
  // FP8 or the sgemm prefill path).
  bool uses_block_kernels(const Tensor& weight, int64_t t) const;
  // Checks the shapes and quantizes x for the block kernels (on the calling thread at
  // decode's few rows).
  BlockDot prepare_block_dot(const Tensor& x, const Tensor& weight);
  // linear() by weight format, on shapes linear() has checked.
  void linear_blocks(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor& out);
  void linear_fp8(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor& out);
  template <typename Elem, typename Rows>
  void attention_rows(const Tensor& q, const KvLayer& kv, const AttentionShape& shape,
                      const BatchPlan& plan, Tensor& out, const Rows& kv_rows);
  void linear_blocks_sgemm(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor& out);

  ThreadPool pool_;
  bool block_weights_;
  const cpu_quant::QuantKernels* kernels_;
  int sgemm_min_rows_ = 0;
  DType kv_dtype_;
  // The activation rows of the current linear op, quantized (one engine thread drives
  // a backend, so one buffer serves every op).
  std::vector<cpu_quant::ActBlock> act_;
  // The same rows rounded back to fp32 (d * q), the sgemm prefill path's input.
  std::vector<float> x_rounded_;
  // FP8 linear ops: the activation rows as e4m3 values (decoded to fp32) and their scales.
  std::vector<float> fp8_x_, fp8_x_scales_;
};

}  // namespace relayllm
