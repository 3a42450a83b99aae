// The composition root: turns the user's engine options (the flags shared by
// `generate` and `serve`) into a ready Engine: backend chosen (backend_factory.h),
// model loaded or the default found (default_model.h), KV budget set, system prompt
// and schema resolved, relay prefixes computed.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "relayllm/backend/op_profile.h"
#include "relayllm/chat/sys_schema.h"
#include "relayllm/dist/rank_processes.h"
#include "relayllm/engine/engine.h"
#include "relayllm/model/generation_config.h"
#include "relayllm/structured/grammar_compiler.h"

namespace relayllm {

struct EngineOptions {
  std::string model;      // empty: the embedded default
  std::string tokenizer;  // folder with tokenizer.json; empty: the model folder
  std::string load_format = "auto";
  uint64_t seed = 0;
  std::string device = "auto";
  std::string dtype = "auto";
  int num_threads = 0;
  // cuda: the share of the device's memory this engine may fill (weights, KV pool,
  // activations); the KV pool takes what the weights and activations leave.
  double gpu_memory_utilization = 0.9;
  EngineConfig engine;
  // Whether engine.kv_cache_bytes was given (--kv-cache-memory). If not, a CPU engine sizes
  // its KV pool from the model and the workload (host_kv_budget.h).
  bool kv_cache_memory_given = false;
  // --quantization: "" / none / gguf (weights as stored), q8_0 (linear and embedding
  // weights quantized to Q8_0 at load) or fp8 (decoder linear weights to e4m3 with per-row
  // scales); model/weight_quantization.h.
  std::string quantization;
  std::string sys_prompt, sys_prompt_file, sys_schema, sys_schema_file;
  std::vector<std::string> relay_prefixes;  // NAME=FILE
  // Environments searched for the default model after the usual places (default_model.h):
  // the Python package passes its interpreter's prefix, which /proc/self/exe does not reveal.
  std::vector<std::string> default_model_venvs;
  // When set, the backend is wrapped so that, while the profile records, every op's
  // time, bytes and FLOPs go into it and steps run op by op (no graphs); see
  // profiling_backend.h.
  std::shared_ptr<OpProfile> op_profile;
  // Tensor parallelism (tensor_parallel_setup.h): the job's ranks, null for one. Rank 0
  // calls create_engine (its engine sends each step through a TpChannel over it), every
  // other rank run_tensor_parallel_worker.
  int tensor_parallel_size = 1;
  std::shared_ptr<Communicator> communicator;
  // Rank 0's channel to the others; create_engine makes it when null. The caller keeps
  // it to stop the workers when no engine came to be (TpChannel::stop).
  std::shared_ptr<TpChannel> tensor_parallel;
  // Every rank's process (dist/rank_processes.h), so that rank 0's server can notice a
  // rank on its host dying; empty for one rank.
  std::vector<RankProcess> rank_processes;
};

struct ServingEngine {
  std::unique_ptr<Engine> engine;
  std::optional<SysSchema> sys_schema;  // set when a system prompt was given
  // The schema's text as resolved (the user's, the default model's chat turns, or the
  // plain default) and how its prefix is encoded, so a new system prompt can replace
  // the old one under the same schema.
  std::string sys_schema_text;
  bool sys_schema_from_chat_template = false;
  std::string model_name;
  bool random_weights = false;
  std::optional<GenerationConfig> generation;
  // Compiles structured-output constraints for this engine's vocabulary (thread-safe, cached).
  std::shared_ptr<structured::GrammarCompiler> grammar_compiler;

  // Text prompt -> ids: formatted by the system-prompt schema when one is set,
  // otherwise encoded whole with special tokens.
  std::vector<int32_t> encode_prompt(const std::string& text) const;
};

// Throws Error with one clear line on any bad option or file.
ServingEngine create_engine(const EngineOptions& options);

// Ranks 1..N-1 of a tensor-parallel job: loads this rank's shard of the same model and
// runs the forward of every step rank 0's engine plans, until that engine is destroyed.
void run_tensor_parallel_worker(const EngineOptions& options);

// The sampling defaults a model asks for in generation_config.json (vLLM's
// `--generation-config auto`), over SamplingParams' own defaults.
SamplingParams default_sampling_params(const std::optional<GenerationConfig>& generation);

}  // namespace relayllm
