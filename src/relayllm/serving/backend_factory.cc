#include "relayllm/serving/backend_factory.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>

#include "relayllm/backend/cpu/cpu_backend.h"
#ifdef RELAYLLM_WITH_CUDA
#include "relayllm/backend/cuda/cuda_backend.h"
#endif
#include "relayllm/common/error.h"
#include "relayllm/common/thread_pool.h"

namespace relayllm {

std::unique_ptr<Backend> make_backend(const BackendOptions& options) {
  RELAYLLM_CHECK(options.device == "auto" || options.device == "cpu" || options.device == "cuda",
                 "unknown --device '{}' (expected auto, cpu or cuda)", options.device);
#ifdef RELAYLLM_WITH_CUDA
  if (options.device == "cuda" ||
      (options.device == "auto" && cuda_device_available() &&
       (options.dtype == "auto" || parse_dtype(options.dtype) != DType::kF32))) {
    CudaBackendOptions cuda;
    cuda.dtype = options.dtype == "auto" ? DType::kBF16 : parse_dtype(options.dtype);
    if (options.local_ranks > 1) {
      const int count = cuda_device_count();
      RELAYLLM_CHECK(options.local_ranks <= count,
                     "tensor parallelism: {} ranks run on this host but it has {} GPU(s); run "
                     "at most one rank per GPU (mpirun -np N -H host:{})",
                     options.local_ranks, count, count);
      cuda.device = options.local_rank;
    }
    return std::make_unique<CudaBackend>(cuda);
  }
#else
  if (options.device == "cuda")
    fail("--device cuda: this build has no CUDA backend (nvcc was not found); use --device cpu");
#endif
  if (options.dtype != "auto" && parse_dtype(options.dtype) != DType::kF32)
    spdlog::warn("--dtype {}: the cpu backend computes in float32", options.dtype);
  CpuBackendOptions cpu;
  cpu.num_threads = options.num_threads;
  if (cpu.num_threads == 0 && options.local_ranks > 1) {
    // Ranks of one host share its cores: one pool per core each would oversubscribe them.
    cpu.num_threads = std::max(1, usable_cpu_count() / options.local_ranks);
  }
  // --dtype float32 is the reference path: every weight dequantized to fp32 at load.
  cpu.block_weights = options.dtype == "auto" || parse_dtype(options.dtype) != DType::kF32;
  // The same switch picks the KV cache: fp16 on the fast path, fp32 on the reference path.
  cpu.kv_dtype = cpu.block_weights ? DType::kF16 : DType::kF32;
  if (const char* kernels = std::getenv("RELAYLLM_CPU_KERNELS")) cpu.kernels = kernels;
  if (const char* pin = std::getenv("RELAYLLM_CPU_PIN")) cpu.pin_threads = std::string(pin) == "1";
  if (const char* rows = std::getenv("RELAYLLM_CPU_SGEMM_MIN_ROWS")) {
    char* end = nullptr;
    const long v = std::strtol(rows, &end, 10);
    RELAYLLM_CHECK(end != rows && *end == '\0' && v >= 0 && v <= (1 << 30),
                   "RELAYLLM_CPU_SGEMM_MIN_ROWS={}: expected a row count >= 0 (0: never sgemm)",
                   rows);
    cpu.sgemm_min_rows = int(v);
  }
  auto backend = std::make_unique<CpuBackend>(cpu);
  spdlog::info("cpu backend: {} threads, {} weights, {} kernels, {} KV cache, prefill {}",
               backend->pool().size(), cpu.block_weights ? "block-format" : "fp32",
               backend->kernels().isa, dtype_name(cpu.kv_dtype),
               backend->sgemm_min_rows() > 0
                   ? fmt::format("sgemm from {} rows", backend->sgemm_min_rows())
                   : std::string("on the integer kernels"));
  return backend;
}

std::function<size_t(const LlamaModel&)> device_kv_budget(Backend& backend, double utilization,
                                                          const SchedulerConfig& scheduler) {
#ifdef RELAYLLM_WITH_CUDA
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  if (!cuda) return {};
  RELAYLLM_CHECK(utilization > 0 && utilization <= 1,
                 "--gpu-memory-utilization {} is outside (0, 1]", utilization);
  // Activations are estimated for a full step of max_num_batched_tokens rows (the residual
  // stream, q/k/v, the MLP's gate/up/act, logits of max_num_seqs rows in fp32 and staging)
  // plus a fixed allowance for the GEMM workspace and the attention partials.
  return [cuda, utilization, scheduler](const LlamaModel& model) {
    cuda->synchronize();  // the weights' allocations are stream-ordered
    const ModelConfig& c = model.config();
    const size_t elem = dtype_size(cuda->compute_dtype());
    const size_t tokens = size_t(scheduler.max_num_batched_tokens);
    const size_t per_token =
        elem * size_t(4 * c.hidden_size + 2 * (c.num_heads + c.num_kv_heads) * c.head_dim +
                      3 * c.intermediate_size);
    const size_t activations = tokens * per_token +
                               size_t(scheduler.max_num_seqs) * size_t(c.vocab_size) * 8 +
                               (size_t(512) << 20);
    const double total = double(cuda->total_memory()), used = total - double(cuda->free_memory());
    const double budget = utilization * total - used - double(activations);
    const size_t per_block_floor = model.kv_bytes_per_block(1);
    RELAYLLM_CHECK(budget > double(per_block_floor) * 256,
                   "--gpu-memory-utilization {}: {:.2f} GiB of {:.2f} GiB are in use (weights and "
                   "others) and activations need {:.2f} GiB: no room left for the KV cache",
                   utilization, used / double(1 << 30), total / double(1 << 30),
                   double(activations) / double(1 << 30));
    spdlog::info(
        "cuda: {:.2f} GiB of {:.2f} GiB in use after loading, {:.2f} GiB kept for activations, "
        "{:.2f} GiB for the KV cache (--gpu-memory-utilization {})",
        used / double(1 << 30), total / double(1 << 30), double(activations) / double(1 << 30),
        budget / double(1 << 30), utilization);
    return size_t(budget);
  };
#else
  (void)backend;
  (void)utilization;
  (void)scheduler;
  return {};
#endif
}

}  // namespace relayllm
