// Errors that reach the user as one clear line. Every throw names what failed
// (file, tensor, field, value) so the message alone is enough to act on.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace relayllm {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

#define RELAYLLM_CHECK(cond, ...)               \
  do {                                          \
    if (!(cond)) ::relayllm::fail(__VA_ARGS__); \
  } while (0)

}  // namespace relayllm
