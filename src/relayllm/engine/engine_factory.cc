#include "relayllm/engine/engine_factory.h"

#include <spdlog/spdlog.h>

#include <fstream>
#include <sstream>

#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/backend/profiling_backend.h"
#ifdef RELAYLLM_WITH_CUDA
#include "relayllm/backend/cuda/cuda_backend.h"
#endif
#include "relayllm/common/error.h"
#include "relayllm/model/model_loader.h"

namespace relayllm {
namespace {

std::string read_text_file(const std::string& path, const char* option) {
  std::ifstream in(path, std::ios::binary);
  RELAYLLM_CHECK(in.good(), "{} {}: cannot open the file", option, path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string pick_text(const std::string& inline_text, const std::string& file, const char* option,
                      const char* file_option) {
  RELAYLLM_CHECK(inline_text.empty() || file.empty(), "give {} or {}, not both", option, file_option);
  return file.empty() ? inline_text : read_text_file(file, file_option);
}

std::unique_ptr<Backend> make_backend(const EngineOptions& options) {
  RELAYLLM_CHECK(options.device == "auto" || options.device == "cpu" || options.device == "cuda",
                 "unknown --device '{}' (expected auto, cpu or cuda)", options.device);
#ifdef RELAYLLM_WITH_CUDA
  if (options.device == "cuda" || (options.device == "auto" && cuda_device_available() &&
                                    (options.dtype == "auto" || parse_dtype(options.dtype) != DType::kF32))) {
    CudaBackendOptions cuda;
    cuda.dtype = options.dtype == "auto" ? DType::kBF16 : parse_dtype(options.dtype);
    return std::make_unique<CudaBackend>(cuda);
  }
#else
  if (options.device == "cuda")
    fail("--device cuda: this build has no CUDA backend (nvcc was not found); use --device cpu");
#endif
  if (options.dtype != "auto" && parse_dtype(options.dtype) != DType::kF32)
    spdlog::warn("--dtype {}: the cpu backend computes in float32", options.dtype);
  return std::make_unique<CpuBackend>(options.num_threads);
}

#ifdef RELAYLLM_WITH_CUDA
// vLLM's rule: weights + KV + activations fill `utilization` of the device's total
// memory, counting what others already hold there as taken. Activations are
// estimated for a full step of max_num_batched_tokens rows (the residual stream,
// q/k/v, the MLP's gate/up/act, logits of max_num_seqs rows in fp32 and staging)
// plus a fixed allowance for the GEMM workspace and the attention partials.
std::function<size_t(const LlamaModel&)> cuda_kv_budget(CudaBackend& cuda, double utilization,
                                                        const SchedulerConfig& scheduler) {
  RELAYLLM_CHECK(utilization > 0 && utilization <= 1,
                 "--gpu-memory-utilization {} is outside (0, 1]", utilization);
  return [&cuda, utilization, scheduler](const LlamaModel& model) {
    cuda.synchronize();  // the weights' allocations are stream-ordered
    const ModelConfig& c = model.config();
    const size_t elem = dtype_size(cuda.compute_dtype());
    const size_t tokens = size_t(scheduler.max_num_batched_tokens);
    const size_t per_token = elem * size_t(4 * c.hidden_size + 2 * (c.num_heads + c.num_kv_heads) * c.head_dim +
                                           3 * c.intermediate_size);
    const size_t activations = tokens * per_token + size_t(scheduler.max_num_seqs) * size_t(c.vocab_size) * 8 +
                               (size_t(512) << 20);
    const double total = double(cuda.total_memory()), used = total - double(cuda.free_memory());
    const double budget = utilization * total - used - double(activations);
    const size_t per_block_floor = model.kv_bytes_per_block(1);
    RELAYLLM_CHECK(budget > double(per_block_floor) * 256,
                   "--gpu-memory-utilization {}: {:.2f} GiB of {:.2f} GiB are in use (weights and "
                   "others) and activations need {:.2f} GiB: no room left for the KV cache",
                   utilization, used / double(1 << 30), total / double(1 << 30),
                   double(activations) / double(1 << 30));
    spdlog::info("cuda: {:.2f} GiB of {:.2f} GiB in use after loading, {:.2f} GiB kept for activations, "
                 "{:.2f} GiB for the KV cache (--gpu-memory-utilization {})",
                 used / double(1 << 30), total / double(1 << 30), double(activations) / double(1 << 30),
                 budget / double(1 << 30), utilization);
    return size_t(budget);
  };
}
#endif

}  // namespace

std::vector<int32_t> ServingEngine::encode_prompt(const std::string& text) const {
  const Tokenizer& tokenizer = engine->tokenizer();
  return sys_schema ? sys_schema->prompt_ids(tokenizer, text) : tokenizer.encode(text, true);
}

SamplingParams default_sampling_params(const std::optional<GenerationConfig>& generation) {
  SamplingParams params;
  if (!generation) return params;
  if (generation->temperature) params.temperature = float(*generation->temperature);
  if (generation->top_p) params.top_p = float(*generation->top_p);
  if (generation->top_k) params.top_k = int32_t(*generation->top_k);
  if (generation->repetition_penalty) params.repetition_penalty = float(*generation->repetition_penalty);
  return params;
}

ServingEngine create_engine(const EngineOptions& options) {
  std::unique_ptr<Backend> backend = make_backend(options);
  LoadedModel loaded = options.model.empty()
                           ? make_embedded_default_model(options.seed)
                           : load_model(options.model, parse_load_format(options.load_format),
                                        options.seed, options.tokenizer);
  EngineConfig config = options.engine;
  config.seed = options.seed;
#ifdef RELAYLLM_WITH_CUDA
  if (auto* cuda = dynamic_cast<CudaBackend*>(backend.get()); cuda && config.num_kv_blocks == 0)
    config.kv_cache_budget = cuda_kv_budget(*cuda, options.gpu_memory_utilization, config.scheduler);
#endif
  if (loaded.config.sliding_window && (config.max_model_len <= 0 ||
                                       config.max_model_len > *loaded.config.sliding_window)) {
    // Attention here is over the full context; capping the length keeps it exact.
    spdlog::warn("the model uses a sliding window of {} tokens: capping max model len to it",
                 *loaded.config.sliding_window);
    config.max_model_len = int32_t(*loaded.config.sliding_window);
  }

  std::string sys_prompt =
      pick_text(options.sys_prompt, options.sys_prompt_file, "--sys-prompt", "--sys-prompt-file");
  std::string schema_text =
      pick_text(options.sys_schema, options.sys_schema_file, "--sys-schema", "--sys-schema-file");
  bool schema_from_chat_template = false;
  if (schema_text.empty() && !loaded.default_sys_schema.empty()) {
    schema_from_chat_template = true;
    // The default chat model: prompts become chat turns under a default system prompt.
    schema_text = loaded.default_sys_schema;
    if (sys_prompt.empty()) sys_prompt = loaded.default_sys_prompt;
  }
  if (!sys_prompt.empty() || !schema_text.empty()) {
    if (schema_text.empty()) schema_text = kDefaultSysSchema;
  }
  RELAYLLM_CHECK(config.enable_relay_attention || options.relay_prefixes.empty(),
                 "--relay-prefix needs --enable-relay-attention");

  if (options.op_profile) backend = std::make_unique<ProfilingBackend>(std::move(backend), options.op_profile);

  ServingEngine serving;
  serving.model_name = loaded.name;
  serving.random_weights = loaded.random_weights;
  serving.generation = loaded.generation;
  serving.engine = std::make_unique<Engine>(loaded.config, loaded.weights, loaded.tokenizer,
                                            std::move(backend), config);
  if (!schema_text.empty())
    serving.sys_schema.emplace(schema_text, sys_prompt, schema_from_chat_template);

  Engine& engine = *serving.engine;
  if (config.enable_relay_attention) {
    if (serving.sys_schema) {
      std::vector<int32_t> ids = serving.sys_schema->prefix_ids(engine.tokenizer());
      if (!ids.empty()) engine.register_prefix("system", std::move(ids));
    }
    for (const std::string& spec : options.relay_prefixes) {
      size_t eq = spec.find('=');
      RELAYLLM_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < spec.size(),
                     "--relay-prefix '{}': expected NAME=FILE", spec);
      std::string name = spec.substr(0, eq);
      std::string text = read_text_file(spec.substr(eq + 1), "--relay-prefix");
      engine.register_prefix(name, engine.tokenizer().encode(text, true));
    }
  }
  return serving;
}

}  // namespace relayllm
