#include "relayllm/server/auth.h"

#include <algorithm>
#include <cstdint>

namespace relayllm {

bool constant_time_equal(std::string_view a, std::string_view b) {
  // Walk the longer length always; a length mismatch is folded into the result.
  size_t n = std::max(a.size(), b.size());
  uint8_t diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    uint8_t x = i < a.size() ? uint8_t(a[i]) : 0;
    uint8_t y = i < b.size() ? uint8_t(b[i]) : 0;
    diff |= uint8_t(x ^ y);
  }
  return diff == 0;
}

bool authorized(const std::string& api_key, std::string_view authorization) {
  if (api_key.empty()) return true;
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.size() < kBearer.size()) return false;
  std::string_view scheme = authorization.substr(0, kBearer.size());
  bool scheme_ok = scheme == kBearer || scheme == "bearer ";
  bool key_ok = constant_time_equal(authorization.substr(kBearer.size()), api_key);
  return scheme_ok && key_ok;
}

}  // namespace relayllm
