// Where a step's time goes, op by op: time, bytes moved and FLOPs per kind of op,
// summed over steps and split by step kind (decode steps, where every sequence adds
// one token, and the rest). Filled by ProfilingBackend; printed as a Markdown table
// with the achieved bandwidth beside every time.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace relayllm {

enum class StepKind { kDecode, kPrefill };

struct OpStats {
  int64_t calls = 0;
  double ms = 0;
  double bytes = 0;  // the op's own reads and writes, each byte once
  double flops = 0;
};

class OpProfile {
 public:
  // The label of the time between ops, when the device waited for the host.
  static constexpr const char* kIdle = "(idle between ops)";

  void add_step(StepKind kind) { ++steps_[int(kind)]; }
  void add_op(StepKind kind, const std::string& label, double ms, double bytes, double flops);

  int64_t steps(StepKind kind) const { return steps_[int(kind)]; }
  const std::map<std::string, OpStats>& ops(StepKind kind) const { return ops_[int(kind)]; }
  // Milliseconds per step of every op and idle gap together.
  double step_ms(StepKind kind) const;

  // Forgets every step and op recorded so far (a benchmark's next configuration).
  void clear() {
    steps_[0] = steps_[1] = 0;
    ops_[0].clear();
    ops_[1].clear();
  }

  // Whether ops are being recorded (default yes). While not, the profiling backend
  // only forwards, graphs included, so one engine can run both ways.
  void set_recording(bool on) { recording_ = on; }
  bool recording() const { return recording_; }

  // The bandwidth (bytes/s) the floors are taken at; 0: unknown, no floors.
  void set_copy_bandwidth(double bytes_per_s) { copy_bandwidth_ = bytes_per_s; }
  double copy_bandwidth() const { return copy_bandwidth_; }

  // A summary line and a Markdown table, ops by time per step, largest first; with a
  // copy bandwidth, each op's floor (its bytes at that bandwidth) and the achieved
  // fraction of it.
  std::string table(StepKind kind) const;

 private:
  bool recording_ = true;
  double copy_bandwidth_ = 0;
  int64_t steps_[2] = {0, 0};
  std::map<std::string, OpStats> ops_[2];
};

}  // namespace relayllm
