// What the model-file tests share: a scratch directory per test and the message of the
// error a call throws.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "relayllm/common/error.h"

namespace relayllm::testing {

// A fresh directory under the system's temp directory, named after `prefix` and the running
// test (plus a random number, so concurrent runs do not meet), removed with its contents at
// the end of scope.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            fmt::format("{}_{}_{}_{}", prefix, info ? info->test_suite_name() : "",
                        info ? info->name() : "", std::random_device{}());
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // Writes `bytes` to the file `name` in the directory; returns its path.
  std::filesystem::path write(const std::string& name, const std::vector<uint8_t>& bytes) const {
    std::filesystem::path p = path_ / name;
    std::ofstream(p, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    return p;
  }

 private:
  std::filesystem::path path_;
};

// The message of the relayllm::Error fn throws, or "(no error)".
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace relayllm::testing
