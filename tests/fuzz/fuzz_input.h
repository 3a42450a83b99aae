// Helpers shared by the fuzz targets: the input as a file (the GGUF and safetensors readers
// map paths), and the one rule every target checks: a hostile input may be refused with
// relayllm::Error, anything else escaping (or a sanitizer report) is a bug.
#pragma once

#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "relayllm/common/error.h"

namespace relayllm::fuzz {

// The loaders log progress lines; at thousands of runs a second they would drown the
// fuzzer's own output.
inline const bool kQuietLogs = [] {
  spdlog::set_level(spdlog::level::off);
  return true;
}();

// An anonymous in-memory file holding the input, reachable by path as /proc/self/fd/N.
class MemoryFile {
 public:
  MemoryFile(const uint8_t* data, size_t size) : fd_(::memfd_create("fuzz-input", MFD_CLOEXEC)) {
    for (size_t done = 0; fd_ >= 0 && done < size;) {
      ssize_t n = ::write(fd_, data + done, size - done);
      if (n <= 0) break;
      done += size_t(n);
    }
  }
  ~MemoryFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

 private:
  int fd_;
};

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Runs fn; a relayllm::Error is the expected answer to bad input and is swallowed.
template <typename Fn>
void refusal_allowed(Fn&& fn) {
  try {
    fn();
  } catch (const Error&) {
  }
}

}  // namespace relayllm::fuzz
