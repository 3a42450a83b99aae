// An error that reaches an HTTP client as an OpenAI-style JSON body with a
// status code: {"error": {"message", "type", "code"}}.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace relayllm {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message)
      : std::runtime_error(std::move(message)), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

template <typename... Args>
[[noreturn]] void fail_api(int status, fmt::format_string<Args...> format, Args&&... args) {
  throw ApiError(status, fmt::format(format, std::forward<Args>(args)...));
}

// OpenAI's error type names for the statuses the server uses.
inline const char* api_error_type(int status) {
  switch (status) {
    case 400:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 404:
      return "not_found_error";
    case 409:
      return "conflict_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 503:
      return "service_unavailable";
    default:
      return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

}  // namespace relayllm
