#include "relayllm/backend/op_profile.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

namespace relayllm {

void OpProfile::add_op(StepKind kind, const std::string& label, double ms, double bytes,
                       double flops) {
  OpStats& s = ops_[int(kind)][label];
  ++s.calls;
  s.ms += ms;
  s.bytes += bytes;
  s.flops += flops;
}

double OpProfile::step_ms(StepKind kind) const {
  if (steps(kind) == 0) return 0;
  double ms = 0;
  for (const auto& [label, s] : ops(kind)) ms += s.ms;
  return ms / double(steps(kind));
}

std::string OpProfile::table(StepKind kind) const {
  const double copy_bandwidth = copy_bandwidth_;
  const char* what = kind == StepKind::kDecode ? "decode" : "prefill and mixed";
  const int64_t n = steps(kind);
  if (n == 0) return fmt::format("no {} steps profiled\n", what);
  std::vector<std::pair<std::string, OpStats>> rows(ops(kind).begin(), ops(kind).end());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });

  const double step = step_ms(kind);
  double bytes = 0;
  for (const auto& [label, s] : rows) bytes += s.bytes;
  bytes /= double(n);
  std::string out =
      fmt::format("{} {} steps, op by op: {:.3f} ms per step, {:.1f} MB moved per step", n, what,
                  step, bytes / 1e6);
  if (copy_bandwidth > 0)
    out += fmt::format("; floor {:.3f} ms at {:.0f} GB/s copy bandwidth ({:.1f}% of it achieved)",
                       bytes / copy_bandwidth * 1e3, copy_bandwidth / 1e9,
                       100 * bytes / copy_bandwidth * 1e3 / step);
  out += "\n\n| op | calls/step | us/step | share | MB/step | GB/s |";
  out += copy_bandwidth > 0 ? " floor us | of floor |" : "";
  out += " TFLOP/s |\n|---|---:|---:|---:|---:|---:|";
  out += copy_bandwidth > 0 ? "---:|---:|" : "";
  out += "---:|\n";
  for (const auto& [label, s] : rows) {
    const double us = s.ms * 1e3 / double(n), mb = s.bytes / 1e6 / double(n);
    const double seconds = s.ms * 1e-3;
    out += fmt::format("| {} | {:.1f} | {:.1f} | {:.1f}% | {:.2f} | ", label,
                       double(s.calls) / double(n), us,
                       step > 0 ? 100 * s.ms / double(n) / step : 0.0, mb);
    out += s.bytes > 0 && seconds > 0 ? fmt::format("{:.0f} |", s.bytes / seconds / 1e9) : "- |";
    if (copy_bandwidth > 0) {
      const double floor_us = s.bytes / copy_bandwidth * 1e6 / double(n);
      out += s.bytes > 0
                 ? fmt::format(" {:.1f} | {:.1f}% |", floor_us, us > 0 ? 100 * floor_us / us : 0.0)
                 : " - | - |";
    }
    out += s.flops > 0 && seconds > 0 ? fmt::format(" {:.2f} |\n", s.flops / seconds / 1e12)
                                      : " - |\n";
  }
  return out;
}

}  // namespace relayllm
