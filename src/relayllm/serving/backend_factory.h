// The backend choice (--device, --dtype, --num-threads) and, on a device backend, the
// byte budget of its KV pool (--gpu-memory-utilization). The only place that knows
// whether this build has the CUDA backend.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "relayllm/backend/backend.h"
#include "relayllm/engine/scheduler.h"
#include "relayllm/model/llama_model.h"

namespace relayllm {

struct BackendOptions {
  std::string device = "auto";  // auto | cpu | cuda
  std::string dtype = "auto";
  int num_threads = 0;  // cpu: 0 = one per core
  // Tensor parallelism: this rank's index among the ranks of its host, and their number.
  // cuda: the rank runs on GPU local_rank; cpu: the cores are split between the ranks.
  int local_rank = 0;
  int local_ranks = 1;
};

// Throws Error with one clear line on a bad device or dtype.
std::unique_ptr<Backend> make_backend(const BackendOptions& options);

// vLLM's rule for a device backend: weights + KV + activations fill `utilization` of
// the device's memory, counting what others already hold there as taken. The budget is
// asked once the weights are loaded. Empty for backends without a device (the engine then
// uses its kv_cache_bytes).
std::function<size_t(const LlamaModel&)> device_kv_budget(Backend& backend, double utilization,
                                                          const SchedulerConfig& scheduler);

}  // namespace relayllm
