// Prometheus metrics of the server, named as vLLM names them but under a
// `relayllm:` prefix. Engine counters come from a snapshot the engine thread
// publishes; latency histograms and finish counts are recorded as requests end.
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
  int64_t num_relay_prefix_blocks = 0;      // KV blocks pinned by relay prefixes
  int64_t max_relay_prefix_blocks = 0;      // the most they may pin
  int64_t num_in_flight = 0;  // admitted requests not yet finished
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

  // Seconds; pass a negative value for a latency that does not apply
  // (no token produced, or only one token for time-per-output-token).
  void observe_finished(const std::string& finish_reason, double ttft, double tpot, double e2e);
  std::string render(const EngineSnapshot& snapshot, const std::string& model_name) const;

 private:
  mutable std::mutex mutex_;
  Histogram ttft_, tpot_, e2e_;
  std::map<std::string, int64_t> finished_;
};

}  // namespace relayllm
