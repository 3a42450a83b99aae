#include "relayllm/server/async_engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "relayllm/common/error.h"
#include "relayllm/server/api_error.h"

namespace relayllm {
namespace {

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

AsyncEngine::AsyncEngine(ServingEngine serving, AsyncEngineOptions options, ServerMetrics& metrics)
    : serving_(std::move(serving)),
      engine_(*serving_.engine),
      tokenizer_(engine_.tokenizer()),
      options_(options),
      metrics_(metrics),
      max_model_len_(engine_.config().max_model_len),
      vocab_size_(int32_t(engine_.model_config().vocab_size)),
      block_size_(engine_.block_pool().block_size()),
      relay_enabled_(engine_.config().enable_relay_attention) {
  step_tokens_seen_ = engine_.stats().prompt_tokens + engine_.stats().generation_tokens;
  publish_snapshot();
  thread_ = std::thread([this] { loop(); });
}

AsyncEngine::~AsyncEngine() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

std::vector<uint64_t> AsyncEngine::submit(std::vector<EngineRequest> requests) {
  if (refusing_.load()) {
    std::string failure;
    {
      std::lock_guard lock(mutex_);
      failure = failure_;
    }
    fail_api(503, "{}", failure.empty() ? "the server is shutting down" : failure);
  }
  const int64_t n = int64_t(requests.size());
  int64_t current = in_flight_.load();
  do {
    if (current + n > options_.max_in_flight)
      fail_api(429, "the server is at capacity ({} requests in flight, limit {}); retry later",
               current, options_.max_in_flight);
  } while (!in_flight_.compare_exchange_weak(current, current + n));
  std::vector<uint64_t> handles;
  {
    std::lock_guard lock(mutex_);
    for (EngineRequest& request : requests) {
      uint64_t handle = next_handle_++;
      handles.push_back(handle);
      auto gate = std::make_shared<SinkGate>();
      gate->sink = std::move(request.sink);
      request.sink = [gate](RequestUpdate update) {
        std::lock_guard gate_lock(gate->mutex);
        if (gate->closed) return;
        gate->closed = update.finished;
        gate->sink(std::move(update));
      };
      open_.emplace(handle, std::move(gate));
      inbox_.push_back([this, handle, r = std::move(request)]() mutable { add(r, handle); });
    }
  }
  cv_.notify_one();
  return handles;
}

void AsyncEngine::close_handle(uint64_t handle) {
  bool was_open;
  {
    std::lock_guard lock(mutex_);
    was_open = open_.erase(handle) != 0;
  }
  if (was_open) --in_flight_;
}

void AsyncEngine::abort(uint64_t handle) {
  close_handle(handle);
  // Commands run in order, so the request's own add ran before this.
  call([this, handle](Engine& engine) {
    auto it = by_handle_.find(handle);
    if (it == by_handle_.end()) return;  // finished already
    int64_t id = it->second;
    engine.abort(id);
    auto live = live_.find(id);
    RequestUpdate update;
    finish_live(id, live->second, *engine.find(id), update);
  });
}

void AsyncEngine::abort_all() {
  refusing_ = true;
  call([this](Engine&) { abort_live(); });
}

void AsyncEngine::fail_all(int status, const std::string& message) {
  refusing_ = true;
  std::unordered_map<uint64_t, std::shared_ptr<SinkGate>> open;
  {
    std::lock_guard lock(mutex_);
    failure_ = message;
    open.swap(open_);
  }
  in_flight_ -= int64_t(open.size());
  for (auto& [handle, gate] : open) {
    std::lock_guard gate_lock(gate->mutex);
    if (gate->closed) continue;
    gate->closed = true;
    RequestUpdate update;
    update.finished = true;
    update.finish_reason = "error";
    update.error_status = status;
    update.error_message = message;
    gate->sink(std::move(update));
  }
}

void AsyncEngine::call(std::function<void(Engine&)> fn) {
  {
    std::lock_guard lock(mutex_);
    inbox_.push_back([this, f = std::move(fn)] { f(engine_); });
  }
  cv_.notify_one();
}

EngineSnapshot AsyncEngine::snapshot() const {
  std::lock_guard lock(snapshot_mutex_);
  EngineSnapshot s = snapshot_;
  s.num_in_flight = in_flight_.load();
  return s;
}

void AsyncEngine::add(EngineRequest& request, uint64_t handle) {
  auto refuse = [&](int status, std::string message) {
    RequestUpdate update;
    update.finished = true;
    update.finish_reason = "error";
    update.error_status = status;
    update.error_message = std::move(message);
    close_handle(handle);
    request.sink(std::move(update));
  };
  if (refusing_.load()) {
    refuse(503, "the server is shutting down");
    return;
  }
  GenerationRequest& r = request.request;
  if (r.auto_prefix_len > 0)
    engine_.relay_prefixes().use_automatic(
        std::span<const int32_t>(r.prompt_ids).first(size_t(r.auto_prefix_len)));
  int64_t id = 0;
  try {
    id = engine_.add_request(std::move(r.prompt_ids), r.params, r.relay_prefix);
  } catch (const KvCapacityError& e) {
    refuse(503, e.what());
    return;
  } catch (const Error& e) {
    refuse(400, e.what());
    return;
  }
  Live& live = live_[id] = Live{handle, std::move(request.sink), 0};
  by_handle_[handle] = id;
  // Streams answer their headers now, not at the first token: a queued request
  // may wait long for it, and clients wait for the headers before anything else.
  RequestUpdate admitted;
  admitted.admitted = true;
  live.sink(std::move(admitted));
}

void AsyncEngine::deliver(const RequestOutput& out) {
  auto it = live_.find(out.id);
  if (it == live_.end()) return;
  Live& live = it->second;
  const Sequence& seq = *out.seq;
  RequestUpdate update;
  update.text = out.new_text;
  update.token_ids = out.new_token_ids;
  if (seq.params.logprobs) {
    update.logprobs.assign(seq.logprobs.begin() + long(live.logprobs_sent), seq.logprobs.end());
    live.logprobs_sent = seq.logprobs.size();
  }
  // The sequence's own status is authoritative; not every path sets out.finished.
  if (out.finished || seq.finished()) {
    finish_live(out.id, live, seq, update);
    return;
  }
  live.sink(std::move(update));
}

void AsyncEngine::abort_live() {
  std::vector<int64_t> ids;  // finish_live erases from live_
  for (auto& [id, live] : live_) ids.push_back(id);
  for (int64_t id : ids) {
    engine_.abort(id);
    RequestUpdate update;
    finish_live(id, live_.at(id), *engine_.find(id), update);
  }
}

void AsyncEngine::finish_live(int64_t engine_id, Live& live, const Sequence& seq,
                              RequestUpdate& update) {
  update.finished = true;
  update.finish_reason = seq.finish_reason.empty() ? "abort" : seq.finish_reason;
  if (update.finish_reason == "error") {
    update.error_status = 503;
    update.error_message = seq.error_message;
  }
  update.stop_reason = seq.stop_reason;
  update.num_prompt_tokens = int32_t(seq.prompt_ids.size());
  update.prompt_logprobs = seq.prompt_logprobs;
  update.num_cached_tokens = seq.prefix_len + seq.num_prefix_cache_hit_tokens;
  update.relay_prefix_tokens = seq.relay_prefix_tokens;
  Clock::time_point end = seq.finish_time.value_or(Clock::now());
  FinishedRequestTimes times;
  times.e2e = seconds_between(seq.arrival_time, end);
  if (seq.first_token_time) {
    times.ttft = seconds_between(seq.arrival_time, *seq.first_token_time);
    times.decode = seconds_between(*seq.first_token_time, end);
    if (seq.output_ids.size() > 1) times.tpot = times.decode / double(seq.output_ids.size() - 1);
  }
  if (seq.first_scheduled_time) {
    times.queue = seconds_between(seq.arrival_time, *seq.first_scheduled_time);
    times.inference = seconds_between(*seq.first_scheduled_time, end);
    if (seq.first_token_time)
      times.prefill = seconds_between(*seq.first_scheduled_time, *seq.first_token_time);
  }
  times.prompt_tokens = int64_t(seq.prompt_ids.size());
  times.generation_tokens = int64_t(seq.output_ids.size());
  metrics_.observe_finished(update.finish_reason, times);
  UpdateSink sink = std::move(live.sink);
  const uint64_t handle = live.handle;
  by_handle_.erase(handle);
  live_.erase(engine_id);  // `live` and `seq` are gone from here on
  engine_.release(engine_id);
  close_handle(handle);
  // A client that reads /metrics right after its response must see the request gone.
  publish_snapshot();
  sink(std::move(update));
}

void AsyncEngine::loop() {
  for (;;) {
    std::deque<std::function<void()>> commands;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return stop_ || !inbox_.empty() || engine_.has_unfinished(); });
      if (stop_) break;
      commands.swap(inbox_);
    }
    for (auto& command : commands) {
      try {
        command();
      } catch (const std::exception& e) {
        spdlog::error("engine command failed: {}", e.what());
      }
    }
    if (engine_.has_unfinished()) {
      try {
        for (const RequestOutput& out : engine_.step()) deliver(out);
        const EngineStats& stats = engine_.stats();
        int64_t seen = stats.prompt_tokens + stats.generation_tokens;
        if (seen > step_tokens_seen_) metrics_.observe_iteration(seen - step_tokens_seen_);
        step_tokens_seen_ = seen;
      } catch (const std::exception& e) {
        // A failed step leaves requests in an unknown state: end them all rather than loop.
        spdlog::error("engine step failed: {}; aborting {} requests", e.what(), live_.size());
        abort_live();
      }
    }
    publish_snapshot();
  }
  abort_live();
  std::lock_guard lock(mutex_);
  inbox_.clear();
}

void AsyncEngine::publish_snapshot() {
  EngineSnapshot s;
  s.num_running = int64_t(engine_.num_running());
  s.num_waiting = int64_t(engine_.num_waiting());
  s.num_blocks = engine_.block_pool().num_blocks();
  s.num_free_blocks = engine_.block_pool().num_free();
  const SchedulerStats& sched = engine_.scheduler_stats();
  s.prefix_cache_queries = sched.prefix_cache_queries;
  s.prefix_cache_hits = sched.prefix_cache_hits;
  s.num_preemptions = sched.num_preemptions;
  const EngineStats& stats = engine_.stats();
  s.relay_attached_requests = stats.relay_attached_requests;
  s.relay_shared_tokens = stats.relay_shared_tokens;
  s.relay_groups = stats.relay_groups;
  s.relay_auto_groups = stats.relay_auto_groups;
  s.relay_kv_rows_saved = stats.relay_kv_rows_saved;
  s.relay_step_groups = stats.last_step_relay_groups;
  s.relay_step_depth = stats.last_step_relay_depth;
  s.relay_step_kv_rows_saved = stats.last_step_relay_kv_rows_saved;
  s.prompt_tokens = stats.prompt_tokens;
  s.generation_tokens = stats.generation_tokens;
  s.num_relay_prefixes = int64_t(engine_.prefixes().size());
  s.num_relay_prefix_blocks = engine_.num_prefix_blocks();
  s.max_relay_prefix_blocks = engine_.max_prefix_blocks();
  std::lock_guard lock(snapshot_mutex_);
  snapshot_ = s;
}

}  // namespace relayllm
