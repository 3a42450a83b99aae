#include "relayllm/server/auth.h"

#include <algorithm>
#include <cctype>
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
  // RFC 6750 / 9110: the scheme name is case-insensitive, then one or more spaces.
  constexpr std::string_view kBearer = "bearer";
  if (authorization.size() <= kBearer.size()) return false;
  bool scheme_ok = true;
  for (size_t i = 0; i < kBearer.size(); ++i)
    scheme_ok &= char(std::tolower(static_cast<unsigned char>(authorization[i]))) == kBearer[i];
  std::string_view rest = authorization.substr(kBearer.size());
  size_t spaces = 0;
  while (spaces < rest.size() && rest[spaces] == ' ') ++spaces;
  scheme_ok &= spaces > 0;
  bool key_ok = constant_time_equal(rest.substr(spaces), api_key);
  return scheme_ok && key_ok;
}

}  // namespace relayllm
