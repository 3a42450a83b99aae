#include "relayllm/server/metrics.h"

#include <fmt/format.h>

#include <algorithm>

namespace relayllm {
namespace {

std::string escape_label(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

// Families vLLM also serves go out under both names; relay's own only under relayllm:.
constexpr const char* kBoth[] = {"relayllm:", "vllm:"};
constexpr const char* kOwn[] = {"relayllm:"};

template <size_t N>
void metric(std::string& out, const char* const (&prefixes)[N], const char* type, const char* name,
            const char* help, const std::string& labels, double value) {
  for (const char* prefix : prefixes)
    out += fmt::format("# HELP {0}{1} {2}\n# TYPE {0}{1} {3}\n{0}{1}{{{4}}} {5}\n", prefix, name,
                       help, type, labels, value);
}

// 1, 2, 5, 10, 20, 50, ... up to `max`: vLLM's buckets for token counts.
std::vector<double> one_two_five(double max) {
  std::vector<double> out;
  for (double scale = 1; scale <= max; scale *= 10)
    for (double m : {1.0, 2.0, 5.0})
      if (m * scale <= max) out.push_back(m * scale);
  return out;
}

std::vector<double> request_time_buckets() {
  return {0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
          30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& labels) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += fmt::format("{}_bucket{{{},le=\"{}\"}} {}\n", name, labels, bounds_[i], cumulative);
  }
  out += fmt::format("{}_bucket{{{},le=\"+Inf\"}} {}\n", name, labels, count_);
  out +=
      fmt::format("{}_sum{{{}}} {}\n{}_count{{{}}} {}\n", name, labels, sum_, name, labels, count_);
}

ServerMetrics::ServerMetrics()
    : ttft_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
             1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0}),
      tpot_({0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
             10.0, 20.0, 40.0, 80.0}),
      e2e_(request_time_buckets()),
      queue_(request_time_buckets()),
      prefill_(request_time_buckets()),
      decode_(request_time_buckets()),
      inference_(request_time_buckets()),
      prompt_tokens_(one_two_five(1e6)),
      generation_tokens_(one_two_five(1e6)),
      iteration_tokens_({1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384}) {
  for (const char* reason : {"stop", "length", "abort"}) finished_[reason] = 0;
}

void ServerMetrics::observe_finished(const std::string& finish_reason,
                                     const FinishedRequestTimes& t) {
  std::lock_guard lock(mutex_);
  ++finished_[finish_reason];
  std::pair<double, Histogram*> times[] = {
      {t.ttft, &ttft_},          {t.tpot, &tpot_},       {t.e2e, &e2e_},
      {t.queue, &queue_},        {t.prefill, &prefill_}, {t.decode, &decode_},
      {t.inference, &inference_}};
  for (auto& [value, histogram] : times)
    if (value >= 0) histogram->observe(value);
  prompt_tokens_.observe(double(t.prompt_tokens));
  generation_tokens_.observe(double(t.generation_tokens));
}

void ServerMetrics::observe_iteration(int64_t tokens) {
  std::lock_guard lock(mutex_);
  iteration_tokens_.observe(double(tokens));
}

std::string ServerMetrics::render(const EngineSnapshot& s, const std::string& model_name,
                                  const CacheConfigInfo* cache) const {
  const std::string labels = fmt::format("model_name=\"{}\"", escape_label(model_name));
  std::string out;
  metric(out, kBoth, "gauge", "num_requests_running", "Requests in the running batch.", labels,
         double(s.num_running));
  metric(out, kBoth, "gauge", "num_requests_waiting", "Requests waiting to be scheduled.", labels,
         double(s.num_waiting));
  double usage = s.num_blocks > 0 ? 1.0 - double(s.num_free_blocks) / double(s.num_blocks) : 0.0;
  metric(out, kBoth, "gauge", "kv_cache_usage_perc", "Fraction of KV blocks in use (1 = full).",
         labels, usage);
  // The name vLLM's dashboards before V1 read.
  metric(out, kBoth, "gauge", "gpu_cache_usage_perc",
         "Fraction of KV blocks in use (1 = full); the older name of kv_cache_usage_perc.", labels,
         usage);
  metric(out, kOwn, "gauge", "num_kv_blocks", "KV blocks in the pool.", labels,
         double(s.num_blocks));
  metric(out, kOwn, "gauge", "num_free_kv_blocks",
         "KV blocks nobody holds (prefix-cached ones included).", labels,
         double(s.num_free_blocks));
  metric(out, kOwn, "gauge", "num_relay_prefixes", "Registered relay prefixes.", labels,
         double(s.num_relay_prefixes));
  metric(out, kOwn, "gauge", "num_relay_prefix_kv_blocks", "KV blocks pinned by relay prefixes.",
         labels, double(s.num_relay_prefix_blocks));
  metric(out, kOwn, "gauge", "max_relay_prefix_kv_blocks",
         "Most KV blocks relay prefixes may pin (--max-relay-prefix-kv-fraction).", labels,
         double(s.max_relay_prefix_blocks));
  metric(out, kBoth, "counter", "prefix_cache_queries_total",
         "Prompt tokens looked up in the prefix cache.", labels, double(s.prefix_cache_queries));
  metric(out, kBoth, "counter", "prefix_cache_hits_total",
         "Prompt tokens found in the prefix cache.", labels, double(s.prefix_cache_hits));
  metric(out, kOwn, "counter", "relay_attached_requests_total",
         "Requests attached to a relay prefix.", labels, double(s.relay_attached_requests));
  metric(out, kOwn, "counter", "relay_shared_tokens_total",
         "Prompt tokens served from relay prefixes instead of being computed.", labels,
         double(s.relay_shared_tokens));
  metric(out, kOwn, "counter", "relay_groups_total",
         "Relay groups of two or more requests formed, summed over engine steps.", labels,
         double(s.relay_groups));
  metric(out, kOwn, "counter", "relay_auto_groups_total",
         "Automatic relay groups (shared prefix-cache blocks) formed, summed over steps.", labels,
         double(s.relay_auto_groups));
  metric(out, kOwn, "counter", "relay_kv_rows_saved_total",
         "KV rows (one layer's K and V of one token) relay groups did not read, by the cost model.",
         labels, double(s.relay_kv_rows_saved));
  metric(out, kOwn, "gauge", "relay_step_groups", "Relay groups in the latest engine step.", labels,
         double(s.relay_step_groups));
  metric(out, kOwn, "gauge", "relay_step_depth",
         "Deepest nesting of relay groups in the latest engine step.", labels,
         double(s.relay_step_depth));
  metric(out, kOwn, "gauge", "relay_step_kv_rows_saved",
         "KV rows relay groups saved in the latest engine step.", labels,
         double(s.relay_step_kv_rows_saved));
  metric(out, kBoth, "counter", "prompt_tokens_total", "Prompt tokens computed.", labels,
         double(s.prompt_tokens));
  metric(out, kBoth, "counter", "generation_tokens_total", "Tokens generated.", labels,
         double(s.generation_tokens));
  metric(out, kBoth, "counter", "num_preemptions_total", "Sequences preempted (recomputed).",
         labels, double(s.num_preemptions));
  if (cache) {
    std::string info = fmt::format(
        "{},block_size=\"{}\",num_gpu_blocks=\"{}\",num_cpu_blocks=\"0\",cache_dtype=\"{}\","
        "enable_prefix_caching=\"{}\",enable_relay_attention=\"{}\",gpu_memory_utilization=\"{}\"",
        labels, cache->block_size, cache->num_gpu_blocks, escape_label(cache->cache_dtype),
        cache->enable_prefix_caching ? "True" : "False",
        cache->enable_relay_attention ? "True" : "False", cache->gpu_memory_utilization);
    metric(out, kBoth, "gauge", "cache_config_info", "Information of the KV cache configuration.",
           info, 1.0);
  }

  std::lock_guard lock(mutex_);
  for (const char* prefix : kBoth) {
    out += fmt::format(
        "# HELP {0}request_success_total Finished requests by finish reason.\n"
        "# TYPE {0}request_success_total counter\n",
        prefix);
    for (const auto& [reason, count] : finished_)
      out += fmt::format("{}request_success_total{{{},finished_reason=\"{}\"}} {}\n", prefix,
                         labels, escape_label(reason), count);
  }
  struct Named {
    const char* name;
    const char* help;
    const Histogram* h;
  };
  const Named histograms[] = {
      {"time_to_first_token_seconds", "Time to first token.", &ttft_},
      {"time_per_output_token_seconds", "Mean time per output token after the first.", &tpot_},
      {"e2e_request_latency_seconds", "End-to-end request latency.", &e2e_},
      {"request_queue_time_seconds", "Time from arrival to first scheduling.", &queue_},
      {"request_prefill_time_seconds", "Time from first scheduling to the first token.", &prefill_},
      {"request_decode_time_seconds", "Time from the first token to the finish.", &decode_},
      {"request_inference_time_seconds", "Time from first scheduling to the finish.", &inference_},
      {"request_prompt_tokens", "Prompt tokens per finished request.", &prompt_tokens_},
      {"request_generation_tokens", "Generated tokens per finished request.", &generation_tokens_},
      {"iteration_tokens_total", "Tokens (prompt + generated) per engine step.",
       &iteration_tokens_},
  };
  for (const Named& n : histograms)
    for (const char* prefix : kBoth) {
      std::string name = std::string(prefix) + n.name;
      out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, n.help, name);
      n.h->render(out, name, labels);
    }
  return out;
}

}  // namespace relayllm
