#include "relayllm/server/stats_logger.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace relayllm {
namespace {

double percent(int64_t part, int64_t whole) {
  return whole > 0 ? 100.0 * double(part) / double(whole) : 0.0;
}

bool active(const EngineSnapshot& before, const EngineSnapshot& now) {
  return now.num_running > 0 || now.num_waiting > 0 || now.prompt_tokens != before.prompt_tokens ||
         now.generation_tokens != before.generation_tokens ||
         now.relay_shared_tokens != before.relay_shared_tokens ||
         now.prefix_cache_hits != before.prefix_cache_hits;
}

}  // namespace

std::string format_stats_line(const EngineSnapshot& before, const EngineSnapshot& now,
                              double seconds) {
  const double s = seconds > 0 ? seconds : 1.0;
  const int64_t computed = now.prompt_tokens - before.prompt_tokens;
  const int64_t cached = now.prefix_cache_hits - before.prefix_cache_hits;
  const int64_t relayed = now.relay_shared_tokens - before.relay_shared_tokens;
  const int64_t queries = now.prefix_cache_queries - before.prefix_cache_queries;
  const int64_t attached = now.relay_attached_requests - before.relay_attached_requests;
  const double usage =
      now.num_blocks > 0 ? 1.0 - double(now.num_free_blocks) / double(now.num_blocks) : 0.0;
  // Relay's share counts every prompt token the interval served: computed, from the
  // prefix cache, or from a relay prefix.
  return fmt::format(
      "Avg prompt throughput: {:.1f} tokens/s, Avg generation throughput: {:.1f} tokens/s, "
      "Running: {} reqs, Waiting: {} reqs, KV cache usage: {:.1f}%, Prefix cache hit rate: "
      "{:.1f}%, Relay: {:.1f}% of prompt tokens ({} tokens, {} reqs)",
      double(computed) / s, double(now.generation_tokens - before.generation_tokens) / s,
      now.num_running, now.num_waiting, 100.0 * usage, percent(cached, queries),
      percent(relayed, computed + cached + relayed), relayed, attached);
}

StatsLogger::StatsLogger(std::function<EngineSnapshot()> snapshot, double interval_s)
    : snapshot_(std::move(snapshot)), interval_(interval_s) {
  thread_ = std::thread([this] { loop(); });
}

StatsLogger::~StatsLogger() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

void StatsLogger::loop() {
  using Clock = std::chrono::steady_clock;
  EngineSnapshot before = snapshot_();
  Clock::time_point since = Clock::now();
  std::unique_lock lock(mutex_);
  for (;;) {
    if (cv_.wait_for(lock, interval_, [this] { return stop_; })) return;
    EngineSnapshot now = snapshot_();
    Clock::time_point at = Clock::now();
    if (active(before, now))
      spdlog::info(
          "{}", format_stats_line(before, now, std::chrono::duration<double>(at - since).count()));
    before = now;
    since = at;
  }
}

}  // namespace relayllm
