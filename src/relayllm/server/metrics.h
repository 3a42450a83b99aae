// Prometheus metrics of the server. Every family vLLM also has is served twice,
// as `relayllm:NAME` and as `vllm:NAME` with the same value from one snapshot, so
// vLLM's dashboards, routers and gateway scorers read them unchanged; relay's own
// families exist only under `relayllm:`. Engine counters come from a snapshot the
// engine thread publishes; histograms and finish counts are recorded as requests
// and engine steps end.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace relayllm {

// What the engine thread publishes after each loop turn.
struct EngineSnapshot {
  int64_t num_running = 0;
  int64_t num_waiting = 0;
  int64_t num_blocks = 0;
  int64_t num_free_blocks = 0;
  int64_t prefix_cache_queries = 0;  // tokens
  int64_t prefix_cache_hits = 0;     // tokens
  int64_t relay_attached_requests = 0;
  int64_t relay_shared_tokens = 0;
  int64_t prompt_tokens = 0;
  int64_t generation_tokens = 0;
  int64_t num_preemptions = 0;
  int64_t num_relay_prefixes = 0;
  int64_t num_relay_prefix_blocks = 0;  // KV blocks pinned by relay prefixes
  int64_t max_relay_prefix_blocks = 0;  // the most they may pin
  int64_t num_in_flight = 0;            // admitted requests not yet finished
  // Relay groups (registered prefixes and automatic levels with two or more requests).
  int64_t relay_groups = 0;         // summed over steps
  int64_t relay_auto_groups = 0;    // automatic groups formed, summed over steps
  int64_t relay_kv_rows_saved = 0;  // KV rows (one layer) not read thanks to them
  int64_t relay_step_groups = 0;    // in the latest step
  int64_t relay_step_depth = 0;     // deepest nesting in the latest step
  int64_t relay_step_kv_rows_saved = 0;
};

// The KV cache's configuration, served as the labels of `cache_config_info` (value 1).
struct CacheConfigInfo {
  int64_t block_size = 0;
  int64_t num_gpu_blocks = 0;  // blocks of the pool, whichever the device
  bool enable_prefix_caching = false;
  bool enable_relay_attention = false;
  std::string cache_dtype = "auto";
  double gpu_memory_utilization = 0;
};

// Seconds of one finished request's phases; negative: the phase did not happen.
struct FinishedRequestTimes {
  double ttft = -1;       // arrival -> first token
  double tpot = -1;       // mean time per output token after the first
  double e2e = -1;        // arrival -> finish
  double queue = -1;      // arrival -> first scheduled
  double prefill = -1;    // first scheduled -> first token
  double decode = -1;     // first token -> finish
  double inference = -1;  // first scheduled -> finish
  int64_t prompt_tokens = 0;
  int64_t generation_tokens = 0;
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  // Appends the _bucket/_sum/_count lines.
  void render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative
  double sum_ = 0;
  uint64_t count_ = 0;
};

class ServerMetrics {
 public:
  ServerMetrics();

  void observe_finished(const std::string& finish_reason, const FinishedRequestTimes& times);
  // Tokens (prompt + generated) one engine step processed.
  void observe_iteration(int64_t tokens);
  std::string render(const EngineSnapshot& snapshot, const std::string& model_name,
                     const CacheConfigInfo* cache) const;

 private:
  mutable std::mutex mutex_;
  Histogram ttft_, tpot_, e2e_, queue_, prefill_, decode_, inference_;
  Histogram prompt_tokens_, generation_tokens_, iteration_tokens_;
  std::map<std::string, int64_t> finished_;
};

}  // namespace relayllm
