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

void metric(std::string& out, const char* type, const std::string& name, const char* help,
            const std::string& labels, double value) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{}{{{}}} {}\n", name, help, name, type, name,
                     labels, value);
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
  out += fmt::format("{}_sum{{{}}} {}\n{}_count{{{}}} {}\n", name, labels, sum_, name, labels, count_);
}

ServerMetrics::ServerMetrics()
    : ttft_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
             10.0, 20.0, 40.0, 80.0}),
      tpot_({0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0}),
      e2e_({0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
            120.0, 240.0, 480.0, 960.0}) {
  for (const char* reason : {"stop", "length", "abort"}) finished_[reason] = 0;
}

void ServerMetrics::observe_finished(const std::string& finish_reason, double ttft, double tpot,
                                     double e2e) {
  std::lock_guard lock(mutex_);
  ++finished_[finish_reason];
  if (ttft >= 0) ttft_.observe(ttft);
  if (tpot >= 0) tpot_.observe(tpot);
  if (e2e >= 0) e2e_.observe(e2e);
}

std::string ServerMetrics::render(const EngineSnapshot& s, const std::string& model_name) const {
  const std::string labels = fmt::format("model_name=\"{}\"", escape_label(model_name));
  std::string out;
  metric(out, "gauge", "relayllm:num_requests_running", "Requests in the running batch.", labels,
         double(s.num_running));
  metric(out, "gauge", "relayllm:num_requests_waiting", "Requests waiting to be scheduled.", labels,
         double(s.num_waiting));
  double usage = s.num_blocks > 0 ? 1.0 - double(s.num_free_blocks) / double(s.num_blocks) : 0.0;
  metric(out, "gauge", "relayllm:kv_cache_usage_perc", "Fraction of KV blocks in use (1 = full).",
         labels, usage);
  metric(out, "gauge", "relayllm:num_kv_blocks", "KV blocks in the pool.", labels,
         double(s.num_blocks));
  metric(out, "gauge", "relayllm:num_free_kv_blocks",
         "KV blocks nobody holds (prefix-cached ones included).", labels,
         double(s.num_free_blocks));
  metric(out, "gauge", "relayllm:num_relay_prefixes", "Registered relay prefixes.", labels,
         double(s.num_relay_prefixes));
  metric(out, "gauge", "relayllm:num_relay_prefix_kv_blocks", "KV blocks pinned by relay prefixes.",
         labels, double(s.num_relay_prefix_blocks));
  metric(out, "gauge", "relayllm:max_relay_prefix_kv_blocks",
         "Most KV blocks relay prefixes may pin (--max-relay-prefix-kv-fraction).", labels,
         double(s.max_relay_prefix_blocks));
  metric(out, "counter", "relayllm:prefix_cache_queries_total",
         "Prompt tokens looked up in the prefix cache.", labels, double(s.prefix_cache_queries));
  metric(out, "counter", "relayllm:prefix_cache_hits_total",
         "Prompt tokens found in the prefix cache.", labels, double(s.prefix_cache_hits));
  metric(out, "counter", "relayllm:relay_attached_requests_total",
         "Requests attached to a relay prefix.", labels, double(s.relay_attached_requests));
  metric(out, "counter", "relayllm:relay_shared_tokens_total",
         "Prompt tokens served from relay prefixes instead of being computed.", labels,
         double(s.relay_shared_tokens));
  metric(out, "counter", "relayllm:prompt_tokens_total", "Prompt tokens computed.", labels,
         double(s.prompt_tokens));
  metric(out, "counter", "relayllm:generation_tokens_total", "Tokens generated.", labels,
         double(s.generation_tokens));
  metric(out, "counter", "relayllm:num_preemptions_total", "Sequences preempted (recomputed).",
         labels, double(s.num_preemptions));

  std::lock_guard lock(mutex_);
  out += "# HELP relayllm:request_success_total Finished requests by finish reason.\n"
         "# TYPE relayllm:request_success_total counter\n";
  for (const auto& [reason, count] : finished_)
    out += fmt::format("relayllm:request_success_total{{{},finished_reason=\"{}\"}} {}\n", labels,
                       escape_label(reason), count);
  struct Named { const char* name; const char* help; const Histogram* h; };
  for (const Named& n :
       {Named{"relayllm:time_to_first_token_seconds", "Time to first token.", &ttft_},
        Named{"relayllm:time_per_output_token_seconds", "Mean time per output token after the first.", &tpot_},
        Named{"relayllm:e2e_request_latency_seconds", "End-to-end request latency.", &e2e_}}) {
    out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", n.name, n.help, n.name);
    n.h->render(out, n.name, labels);
  }
  return out;
}

}  // namespace relayllm
