// Runs the single-threaded Engine on a thread of its own. Other threads talk to
// it through an inbox of commands (add, abort, prefix operations); the engine
// thread drains the inbox, steps while work exists, and hands each request's
// new text/tokens/logprobs to the request's sink. Sinks run on the engine
// thread and must only hand the update on (post it to a connection).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "relayllm/server/metrics.h"
#include "relayllm/serving/engine_builder.h"
#include "relayllm/serving/request_parser.h"

namespace relayllm {

// New output of one request since its previous update.
struct RequestUpdate {
  // The first update of every request the engine accepted: it carries nothing else.
  bool admitted = false;
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<TokenLogprobs> logprobs;  // one per new token, when asked for
  bool finished = false;
  std::string finish_reason;               // "stop" | "length" | "abort" | "error"
  std::optional<std::string> stop_reason;  // the stop string that matched
  int32_t num_prompt_tokens = 0;           // set on the final update
  // Of those, tokens served from the prefix cache or a relay prefix (set on the final update).
  int32_t num_cached_tokens = 0;
  // Of those, tokens read through relay groups (a registered or automatic relay prefix), as
  // `relayllm generate`'s relay_prefix_tokens (set on the final update).
  int32_t relay_prefix_tokens = 0;
  std::vector<PromptLogprob> prompt_logprobs;  // set on the final update, when asked for
  std::optional<int> error_status;  // the engine refused the request (finish_reason "error")
  std::string error_message;
};

using UpdateSink = std::function<void(RequestUpdate)>;

struct EngineRequest {
  GenerationRequest request;
  UpdateSink sink;
};

struct AsyncEngineOptions {
  // Most requests admitted and not finished (running + waiting); more get 429.
  int64_t max_in_flight = 1024;
  // Most chat-system prefixes registered automatically (RelayPrefixLimits::max_auto).
  int32_t max_auto_prefixes = 8;
};

class AsyncEngine {
 public:
  AsyncEngine(ServingEngine serving, AsyncEngineOptions options, ServerMetrics& metrics);
  ~AsyncEngine();  // aborts what is left (sinks see "abort") and joins the thread

  // Admits all of `requests` or none: throws ApiError 429 when they would
  // exceed max_in_flight. Returns one handle per request, for abort().
  // Throws ApiError 503 once abort_all() was called.
  std::vector<uint64_t> submit(std::vector<EngineRequest> requests);
  // Frees the request's place in max_in_flight at once (a client that left must not
  // hold it until the engine's next turn); the engine drops the request before it
  // schedules again. A no-op for finished requests.
  void abort(uint64_t handle);
  // Shutdown: refuses new requests and ends every request in flight with "abort".
  void abort_all();
  // For when the engine thread can no longer make progress (a tensor-parallel rank died and
  // the step waits in a collective forever): refuses new requests with `status` and ends
  // every request in flight with that error from the calling thread, without the engine
  // thread. Whatever the engine thread might still send those requests is dropped.
  void fail_all(int status, const std::string& message);
  // Runs `fn` on the engine thread between steps (prefix management, reads).
  void call(std::function<void(Engine&)> fn);

  // Safe from any thread: these do not change after construction.
  const Tokenizer& tokenizer() const { return tokenizer_; }
  const ServingEngine& serving() const { return serving_; }
  int32_t max_model_len() const { return max_model_len_; }
  int32_t vocab_size() const { return vocab_size_; }
  int32_t block_size() const { return block_size_; }
  bool relay_enabled() const { return relay_enabled_; }

  EngineSnapshot snapshot() const;

 private:
  // A request's sink behind a lock, so that fail_all (any thread) and the engine thread
  // never both call it, and nothing reaches it after its final update.
  struct SinkGate {
    std::mutex mutex;
    bool closed = false;
    UpdateSink sink;
  };

  struct Live {
    uint64_t handle = 0;
    UpdateSink sink;
    size_t logprobs_sent = 0;
  };

  void loop();
  void add(EngineRequest& request, uint64_t handle);
  void deliver(const RequestOutput& out);
  void finish_live(int64_t engine_id, Live& live, const Sequence& seq, RequestUpdate& update);
  // Aborts every live request and finishes it towards its sink (on the loop thread).
  void abort_live();
  // Takes the handle out of the open set; the one caller that does so frees its slot.
  void close_handle(uint64_t handle);
  void publish_snapshot();

  ServingEngine serving_;
  Engine& engine_;
  Tokenizer tokenizer_;
  AsyncEngineOptions options_;
  ServerMetrics& metrics_;
  int32_t max_model_len_, vocab_size_, block_size_;
  bool relay_enabled_;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> inbox_;
  bool stop_ = false;
  // Handles submitted and not finished, with their sinks, under mutex_.
  std::unordered_map<uint64_t, std::shared_ptr<SinkGate>> open_;
  std::string failure_;  // fail_all's message, under mutex_
  std::atomic<bool> refusing_{false};
  std::atomic<int64_t> in_flight_{0};
  std::atomic<uint64_t> next_handle_{1};

  // Engine thread only.
  std::unordered_map<int64_t, Live> live_;           // by engine id
  std::unordered_map<uint64_t, int64_t> by_handle_;  // handle -> engine id
  int64_t step_tokens_seen_ = 0;  // prompt + generation tokens up to the last step

  mutable std::mutex snapshot_mutex_;
  EngineSnapshot snapshot_;

  std::thread thread_;
};

}  // namespace relayllm
