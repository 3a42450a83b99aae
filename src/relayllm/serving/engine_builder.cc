#include "relayllm/serving/engine_builder.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "relayllm/backend/profiling_backend.h"
#include "relayllm/common/error.h"
#include "relayllm/common/thread_pool.h"
#include "relayllm/dist/communicator.h"
#include "relayllm/engine/tp_worker.h"
#include "relayllm/model/model_loader.h"
#include "relayllm/model/tensor_parallel.h"
#include "relayllm/model/weight_quantization.h"
#include "relayllm/serving/backend_factory.h"
#include "relayllm/serving/default_model.h"
#include "relayllm/serving/host_kv_budget.h"

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
  RELAYLLM_CHECK(inline_text.empty() || file.empty(), "give {} or {}, not both", option,
                 file_option);
  return file.empty() ? inline_text : read_text_file(file, file_option);
}

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
  if (generation->repetition_penalty)
    params.repetition_penalty = float(*generation->repetition_penalty);
  return params;
}

namespace {

// The backend and the model (this rank's shard of it under tensor parallelism).
struct LoadedParts {
  std::unique_ptr<Backend> backend;
  std::optional<LoadedModel> model;
  std::string default_sys_schema, default_sys_prompt;
};

LoadedParts load_parts(const EngineOptions& options) {
  Communicator* comm = options.communicator.get();
  const bool sharded = comm && comm->size() > 1;
  LoadedParts parts;
  parts.backend = make_backend(BackendOptions{options.device, options.dtype, options.num_threads,
                                              sharded ? comm->local_rank() : 0,
                                              sharded ? comm->local_size() : 1});
  // The CUDA backend's all-reduce (NCCL) has not run on GPUs yet, so it is not offered.
  RELAYLLM_CHECK(!sharded || parts.backend->name() == "cpu",
                 "--tensor-parallel-size {}: the {} backend does not support tensor parallelism "
                 "yet; use --device cpu",
                 comm ? comm->size() : 1, parts.backend->name());
  // Checked before loading, so a bad value fails fast.
  const LoadQuantization quantization = parse_load_quantization(options.quantization);
  const WeightFormat quantized = quantized_format(quantization);
  RELAYLLM_CHECK(
      quantization == LoadQuantization::kNone || parts.backend->supports_weight_format(quantized),
      "--quantization {}: the {} backend does not run {} weights here ({})", options.quantization,
      parts.backend->name(), weight_format_name(quantized),
      quantization == LoadQuantization::kFP8
          ? "FP8 GEMMs need an sm_89 or newer GPU; the cpu backend runs them as the "
            "reference"
          : "the cpu backend does, except with --dtype float32, the fp32 reference "
            "path");
  // Quantizing at load works on whole tensors; the ranks' slices are not covered yet.
  RELAYLLM_CHECK(quantization == LoadQuantization::kNone || !sharded,
                 "--quantization {} with --tensor-parallel-size {}: not supported yet (quantize "
                 "the checkpoint, e.g. a Q8_0 GGUF file, or run one rank)",
                 options.quantization, comm ? comm->size() : 1);
  std::optional<ShardLayout> shard;
  if (sharded) {
    shard.emplace();  // rank and size; the loaders derive the rest from the config
    shard->rank = comm->rank();
    shard->size = comm->size();
  }
  const ShardLayout* part = shard ? &*shard : nullptr;
  // Weights in a format the backend runs directly stay in it (GGUF blocks on the cpu).
  Backend* be = parts.backend.get();
  const WeightFormatFilter keep = [be](WeightFormat f) { return be->supports_weight_format(f); };
  if (options.model.empty()) {
    std::vector<std::filesystem::path> extra_venvs(options.default_model_venvs.begin(),
                                                   options.default_model_venvs.end());
    DefaultModel fallback = make_embedded_default_model(options.seed, keep, extra_venvs, part);
    parts.model.emplace(std::move(fallback.loaded));
    parts.default_sys_schema = std::move(fallback.sys_schema);
    parts.default_sys_prompt = std::move(fallback.sys_prompt);
  } else {
    parts.model.emplace(load_model(options.model, parse_load_format(options.load_format),
                                   options.seed, options.tokenizer, keep, part));
  }
  if (quantization != LoadQuantization::kNone) {
    const size_t n = quantize_weights(parts.model->weights, parts.model->config, quantization);
    spdlog::info("--quantization {}: {} weight tensors quantized to {} at load",
                 options.quantization, n, weight_format_name(quantized));
  }
  return parts;
}

}  // namespace

void run_tensor_parallel_worker(const EngineOptions& options) {
  RELAYLLM_CHECK(options.communicator && options.communicator->rank() != 0,
                 "run_tensor_parallel_worker runs on ranks 1..N-1 of a tensor-parallel job");
  LoadedParts parts = load_parts(options);
  run_tp_worker(parts.model->config, parts.model->weights, std::move(parts.backend),
                options.communicator);
}

ServingEngine create_engine(const EngineOptions& options) {
  LoadedParts parts = load_parts(options);
  std::unique_ptr<Backend> backend = std::move(parts.backend);
  std::string default_sys_schema = std::move(parts.default_sys_schema),
              default_sys_prompt = std::move(parts.default_sys_prompt);
  std::optional<LoadedModel>& model = parts.model;
  LoadedModel& loaded = *model;
  EngineConfig config = options.engine;
  config.seed = options.seed;
  if (options.communicator && options.communicator->size() > 1)
    config.tensor_parallel = options.tensor_parallel
                                 ? options.tensor_parallel
                                 : std::make_shared<TpChannel>(options.communicator);
  if (loaded.config.sliding_window &&
      (config.max_model_len <= 0 || config.max_model_len > *loaded.config.sliding_window)) {
    // Attention here is over the full context; capping the length keeps it exact.
    spdlog::warn("the model uses a sliding window of {} tokens: capping max model len to it",
                 *loaded.config.sliding_window);
    config.max_model_len = int32_t(*loaded.config.sliding_window);
  }
  if (config.num_kv_blocks == 0) {
    config.kv_cache_budget =
        device_kv_budget(*backend, options.gpu_memory_utilization, config.scheduler);
    if (!config.kv_cache_budget && !options.kv_cache_memory_given)
      config.kv_cache_budget =
          host_kv_budget(config.scheduler.max_num_seqs, config.max_model_len, config.block_size);
  }

  std::string sys_prompt =
      pick_text(options.sys_prompt, options.sys_prompt_file, "--sys-prompt", "--sys-prompt-file");
  std::string schema_text =
      pick_text(options.sys_schema, options.sys_schema_file, "--sys-schema", "--sys-schema-file");
  bool schema_from_chat_template = false;
  if (schema_text.empty() && !default_sys_schema.empty()) {
    schema_from_chat_template = true;
    // The default chat model: prompts become chat turns under a default system prompt.
    schema_text = default_sys_schema;
    if (sys_prompt.empty()) sys_prompt = default_sys_prompt;
  }
  if (!sys_prompt.empty() || !schema_text.empty()) {
    if (schema_text.empty()) schema_text = kDefaultSysSchema;
  }
  RELAYLLM_CHECK(config.enable_relay_attention || options.relay_prefixes.empty(),
                 "--relay-prefix needs --enable-relay-attention");

  // On a device backend the engine thread only waits during the forward pass: up to 4 threads
  // fill the grammar masks meanwhile, leaving a core to the HTTP threads. On the cpu the
  // forward's threads hold every core, so one.
  // After it, up to 8 threads sample the step's rows (half a megabyte of logits each at a
  // 128k vocabulary) while the device waits for the next step.
  if (backend->name() != "cpu") {
    config.grammar_mask_threads = std::clamp(usable_cpu_count() - 2, 1, 4);
    config.sampling_threads = std::clamp(usable_cpu_count() - 2, 1, 8);
  }
  if (options.op_profile)
    backend = std::make_unique<ProfilingBackend>(std::move(backend), options.op_profile);

  ServingEngine serving;
  serving.model_name = loaded.name;
  serving.random_weights = loaded.random_weights;
  serving.generation = loaded.generation;
  serving.engine = std::make_unique<Engine>(loaded.config, loaded.weights, loaded.tokenizer,
                                            std::move(backend), config);
  if (!schema_text.empty()) {
    serving.sys_schema.emplace(schema_text, sys_prompt, schema_from_chat_template);
    serving.sys_schema_text = schema_text;
    serving.sys_schema_from_chat_template = schema_from_chat_template;
  }

  Engine& engine = *serving.engine;
  serving.grammar_compiler = std::make_shared<structured::GrammarCompiler>(
      engine.tokenizer(), int32_t(engine.model_config().vocab_size), engine.eos_token_ids());
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
