// The periodic throughput line of `serve`, as vLLM logs it: prompt and generation
// throughput over the last interval, running/waiting requests, KV cache usage and
// the prefix-cache hit rate, plus relay's share of the prompt tokens. Runs on a
// thread of its own and logs only while the engine has done or has work.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "relayllm/server/metrics.h"

namespace relayllm {

// The line for the interval between two snapshots `seconds` apart.
std::string format_stats_line(const EngineSnapshot& before, const EngineSnapshot& now,
                              double seconds);

class StatsLogger {
 public:
  StatsLogger(std::function<EngineSnapshot()> snapshot, double interval_s);
  ~StatsLogger();  // stops and joins

 private:
  void loop();

  std::function<EngineSnapshot()> snapshot_;
  std::chrono::duration<double> interval_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace relayllm
