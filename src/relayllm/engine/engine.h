// The Engine owns everything one model needs to serve: the backend, the model,
// the paged KV pool, relay prefixes, the scheduler and the live requests.
// Several engines can coexist; nothing is global. Not thread-safe: one thread
// drives it (adds, steps, aborts).
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "relayllm/backend/backend.h"
#include "relayllm/backend/relay_group_planner.h"
#include "relayllm/common/error.h"
#include "relayllm/engine/grammar_mask_worker.h"
#include "relayllm/engine/model_runner.h"
#include "relayllm/engine/output_processor.h"
#include "relayllm/engine/row_sampler.h"
#include "relayllm/engine/scheduler.h"
#include "relayllm/engine/sequence.h"
#include "relayllm/engine/tp_channel.h"
#include "relayllm/kv/block_pool.h"
#include "relayllm/kv/relay_prefix_manager.h"
#include "relayllm/model/llama_model.h"
#include "relayllm/tokenizer/tokenizer.h"

namespace relayllm {

struct EngineConfig {
  int32_t block_size = 16;
  int32_t num_kv_blocks = 0;  // 0: derive from kv_cache_bytes
  size_t kv_cache_bytes = size_t(1) << 30;
  // Device backends: the bytes the KV pool may take, asked once the weights are on
  // the device (the serving layer derives it from the memory utilization). When
  // set, it replaces kv_cache_bytes; num_kv_blocks still wins over both.
  std::function<size_t(const LlamaModel&)> kv_cache_budget;
  int32_t max_model_len = 0;  // 0: the model's max_position_embeddings
  SchedulerConfig scheduler;
  bool enable_relay_attention = false;
  // With relay on and prefix caching on: each step, the leading blocks scheduled
  // requests share through the prefix cache become (nested) relay groups, where the
  // cost rule of backend/relay_group_planner says they save bytes.
  bool auto_relay_groups = true;
  // Relay prefixes together may pin at most this share of the KV pool, so requests
  // always keep the rest.
  double max_prefix_kv_fraction = 0.5;
  // Decode steps of up to this many requests run as captured graphs on backends
  // that support them (cuda); enforce_eager turns that off.
  bool enforce_eager = false;
  int32_t cuda_graph_max_batch = 256;
  // Tensor parallelism: rank 0's channel to the job's other ranks (null: one rank). The
  // weights this engine gets are rank 0's slices; every forward is sent to the other
  // ranks, which run tp_worker.h's loop, and the engine's destruction stops them.
  std::shared_ptr<TpChannel> tensor_parallel;
  // Threads that fill a step's grammar masks during the forward pass (grammar_mask_worker.h):
  // 1 where the forward's own threads take the cores (cpu), more where the forward is device
  // work (the serving layer picks).
  int32_t grammar_mask_threads = 1;
  // Threads that sample a step's rows after the forward pass (row_sampler.h): 1 on the cpu,
  // more where the forward is device work and the host's sampling is on the step's path.
  int32_t sampling_threads = 1;
  uint64_t seed = 0;            // seeds requests that bring no seed of their own
  bool capture_logits = false;  // keep each sampled row's logits (tests)
};

// What one step produced for one request. Token ids and text are the new part;
// `finished` requests also carry their whole result.
struct RequestOutput {
  int64_t id = 0;
  std::vector<int32_t> new_token_ids;
  std::string new_text;
  bool finished = false;
  const Sequence* seq = nullptr;  // valid until release(id)
};

struct EngineStats {
  int64_t steps = 0;
  int64_t prompt_tokens = 0;  // prompt tokens computed (relay prefixes and cache hits excluded)
  int64_t generation_tokens = 0;
  int64_t relay_attached_requests = 0;
  int64_t relay_shared_tokens = 0;  // prompt tokens served from relay prefixes
  int64_t graph_steps = 0;          // steps that replayed a captured graph
  // Relay groups per step: every group of the plan (registered prefixes and automatic
  // levels) with two or more requests in it, and the KV rows they saved by the cost model.
  int64_t relay_groups = 0;         // summed over steps
  int64_t relay_auto_groups = 0;    // of those, automatic (from the prefix cache)
  int64_t relay_kv_rows_saved = 0;  // summed over steps (one layer's KV rows)
  int32_t last_step_relay_groups = 0;
  int32_t last_step_relay_depth = 0;  // deepest nesting in the latest step
  int32_t max_relay_depth = 0;        // deepest nesting of any step
  int64_t last_step_relay_kv_rows_saved = 0;
  // Decode steps (every row a decode) and the KV rows their attention read per layer
  // (groups once per step, own ranges per request), against what paged attention
  // without any group would read: the benchmark's attention-bytes figure.
  int64_t decode_steps = 0;
  int64_t decode_attention_kv_rows = 0;
  int64_t decode_paged_kv_rows = 0;
  // Grammar masks (structured outputs): how many were filled, the seconds their worker spent
  // filling them while forward passes ran, and the seconds the engine thread still waited for
  // them after a forward pass (near zero when the overlap hides the fill).
  int64_t grammar_masks = 0;
  double grammar_mask_fill_seconds = 0;
  double grammar_mask_wait_seconds = 0;
  // Where the steps' time went, summed over steps: scheduling and planning; the forward pass
  // with the logits' download and any wait for grammar masks after it; sampling the rows; and
  // committing them (grammar state, detokenization, stop checks). On a device backend all but
  // the forward pass are host work between two forward passes.
  double plan_seconds = 0;
  double forward_seconds = 0;
  double sample_seconds = 0;
  double commit_seconds = 0;
};

class Engine {
 public:
  Engine(const ModelConfig& config, const ModelWeights& weights, Tokenizer tokenizer,
         std::unique_ptr<Backend> backend, EngineConfig engine_config);
  ~Engine();

  // Registers a relay prefix and computes its KV now (positions 0..S-1).
  // Requires enable_relay_attention. Throws KvCapacityError when the pool cannot
  // hold it or it would take prefixes past max_prefix_kv_fraction of the pool.
  const RelayPrefix& register_prefix(const std::string& name, std::vector<int32_t> tokens);
  // Stops new requests from attaching; frees the prefix once no request uses it.
  void remove_prefix(const std::string& name);
  std::vector<const RelayPrefix*> prefixes() const { return prefixes_.all(); }
  // The owner of relay prefixes (quota, automatic prefixes, users), for the server.
  RelayPrefixManager& relay_prefixes() { return prefixes_; }
  const RelayPrefixManager& relay_prefixes() const { return prefixes_; }
  // KV blocks held by relay prefixes (also those being removed), and the most they may hold.
  int32_t num_prefix_blocks() const { return prefixes_.num_pinned_blocks(); }
  int32_t max_prefix_blocks() const { return prefixes_.max_pinned_blocks(); }

  // Validates and queues a request; returns its id. Throws Error on bad input
  // (empty prompt, id outside the vocabulary, too long, bad sampling values), and
  // KvCapacityError when the blocks not pinned by relay prefixes cannot hold the prompt.
  // With relay on, the request attaches to the longest matching relay prefix, or,
  // when `prefix_name` is given, to that prefix only: then it is an Error when the
  // prefix is not registered (or being removed) or the prompt does not start
  // token-exactly with it followed by at least one more token.
  int64_t add_request(std::vector<int32_t> prompt_ids, const SamplingParams& params,
                      const std::string& prefix_name = {});
  void abort(int64_t id);
  std::vector<RequestOutput> step();
  // Turns decode graphs off (or back on) for later steps: benchmarks compare both
  // on one loaded model.
  void set_enforce_eager(bool eager);
  bool has_unfinished() const { return !scheduler_.empty(); }
  // Forgets a finished request (its Sequence is destroyed).
  void release(int64_t id);
  const Sequence* find(int64_t id) const;

  // The backend the model runs on (benchmarks switch its kernels between runs).
  Backend& backend() { return *backend_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }
  const ModelConfig& model_config() const { return model_.config(); }
  const EngineConfig& config() const { return config_; }
  const BlockPool& block_pool() const { return pool_; }
  const SchedulerStats& scheduler_stats() const { return scheduler_.stats(); }
  const EngineStats& stats() const { return stats_; }
  size_t num_waiting() const { return scheduler_.num_waiting(); }
  size_t num_running() const { return scheduler_.num_running(); }
  std::vector<int32_t> eos_token_ids() const { return output_->eos_token_ids(); }
  // Bytes of one KV element in the pool (the backend's compute dtype).
  int32_t kv_element_bytes() const { return int32_t(dtype_size(backend_->compute_dtype())); }

 private:
  void check_prefix_tokens(const std::string& name, std::span<const int32_t> tokens) const;
  void compute_prefix_kv(const RelayPrefix& prefix);
  BatchPlan build_plan(const std::vector<ScheduledSequence>& batch,
                       std::vector<int32_t>& first_logit_index);
  void record_relay_stats(const BatchPlan& plan, const RelayGroupPlan& groups);
  std::vector<int32_t> banned_ids(const Sequence& seq) const;
  // One sequence's share of a step's logits, from the forward pass to its committed token.
  struct RowWork {
    Sequence* seq = nullptr;
    int32_t num_tokens = 0;
    const float* rows = nullptr;  // its logit rows in the step's logits
    int32_t num_rows = 0;
    int32_t start = 0;   // own index of its first row
    bool draws = false;  // the step ends its prompt (or decodes): a token is sampled
    std::vector<int32_t> banned;
    SampleOutput sampled;
    bool grammar_rejected = false;    // the request's grammar did not accept the sampled token
    std::exception_ptr sample_error;  // the draw failed (may end only this request)
    std::exception_ptr fatal;         // anything else: the step fails
  };
  // Prompt logprobs, the draw and the grammar's advance past the drawn token; touches only
  // w.seq, so it runs on the row sampler's threads.
  void sample_rows(RowWork& w, std::vector<float>& scratch) const;
  // The draw's effects (logprobs, grammar, text, finishing), in batch order on the engine thread.
  void commit_rows(RowWork& w, RequestOutput& out);
  void append_token(Sequence& seq, int32_t token, RequestOutput& out);
  void finish(Sequence& seq, const std::string& reason);
  void release_prefix_use(Sequence& seq);

  EngineConfig config_;
  Tokenizer tokenizer_;
  std::unique_ptr<Backend> backend_;
  LlamaModel model_;
  ModelRunner runner_;
  TpChannel* tp_leader_ = nullptr;  // config_.tensor_parallel when other ranks run too
  std::vector<KvLayer> kv_cache_;
  BlockPool pool_;
  RelayPrefixManager prefixes_;
  Scheduler scheduler_;
  std::unique_ptr<OutputProcessor> output_;
  std::map<int64_t, std::unique_ptr<Sequence>> sequences_;
  int64_t next_id_ = 0;
  EngineStats stats_;
  RelayCostModel relay_cost_;
  std::vector<float> logits_;
  RowSampler row_sampler_;
  // Started by the first step that samples a constrained token; last, so that its thread
  // ends before the sequences it may be filling masks of are destroyed.
  std::unique_ptr<GrammarMaskWorker> mask_worker_;
};

}  // namespace relayllm
