// Timestamps a backend's ops in the order they run, for the op profile
// (profiling_backend.h). A device backend marks its stream, so the times are the
// device's, not the host's launch times.
#pragma once

#include <chrono>
#include <vector>

namespace relayllm {

class OpTimer {
 public:
  virtual ~OpTimer() = default;
  // Records a point in the backend's order of work.
  virtual void mark() = 0;
  // Milliseconds between each pair of consecutive marks since the last read
  // (marks - 1 values; empty with fewer than two marks), waiting for the marked
  // work to finish. Forgets the marks: the next read starts from the next mark.
  virtual std::vector<double> read_ms() = 0;
};

// For backends whose ops return when their work is done (the CPU backend).
class HostOpTimer final : public OpTimer {
 public:
  void mark() override { marks_.push_back(std::chrono::steady_clock::now()); }
  std::vector<double> read_ms() override {
    std::vector<double> ms;
    for (size_t i = 1; i < marks_.size(); ++i)
      ms.push_back(std::chrono::duration<double, std::milli>(marks_[i] - marks_[i - 1]).count());
    marks_.clear();
    return ms;
  }

 private:
  std::vector<std::chrono::steady_clock::time_point> marks_;
};

}  // namespace relayllm
