#include "relayllm/common/json_line.h"

#include <string_view>

namespace relayllm {

std::string escape_line_separators(std::string json_text) {
  // U+0085 is C2 85; U+2028 and U+2029 are E2 80 A8 and E2 80 A9. Most text has none: scan first.
  auto next = [&](size_t from) {
    for (size_t i = from; i + 1 < json_text.size(); ++i) {
      const auto b = static_cast<unsigned char>(json_text[i]);
      if ((b == 0xC2 && static_cast<unsigned char>(json_text[i + 1]) == 0x85) ||
          (b == 0xE2 && i + 2 < json_text.size() &&
           static_cast<unsigned char>(json_text[i + 1]) == 0x80 &&
           (static_cast<unsigned char>(json_text[i + 2]) & 0xFE) == 0xA8))
        return i;
    }
    return std::string::npos;
  };
  size_t at = next(0);
  if (at == std::string::npos) return json_text;
  std::string out;
  out.reserve(json_text.size() + 16);
  size_t done = 0;
  while (at != std::string::npos) {
    out.append(json_text, done, at - done);
    const bool nel = static_cast<unsigned char>(json_text[at]) == 0xC2;
    if (nel) {
      out += "\\u0085";
      done = at + 2;
    } else {
      out += static_cast<unsigned char>(json_text[at + 2]) == 0xA8 ? "\\u2028" : "\\u2029";
      done = at + 3;
    }
    at = next(done);
  }
  out.append(json_text, done, std::string::npos);
  return out;
}

std::string json_line(const nlohmann::json& value) {
  return escape_line_separators(
      value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

std::string json_line(const nlohmann::ordered_json& value) {
  return escape_line_separators(
      value.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
}

}  // namespace relayllm
