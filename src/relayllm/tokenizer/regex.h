// A compiled PCRE2 pattern (UTF + Unicode properties), used by Split and Replace.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace relayllm {

// Patterns are compiled with PCRE2_UTF | PCRE2_UCP; \s and \S mean Unicode White_Space, as in the
// reference implementation's regex engine.
class Regex {
 public:
  // Throws Error naming `what` (the JSON field it came from) when the pattern does not compile.
  Regex(const std::string& pattern, const std::string& what);
  static Regex literal(std::string_view text, const std::string& what);

  // Byte ranges [begin, end) of all non-overlapping matches, left to right. Subject must be valid
  // UTF-8.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view subject) const;

  std::string replace_all(std::string_view subject, std::string_view replacement) const;

 private:
  struct Code;
  std::shared_ptr<const Code> code_;
  std::string pattern_;
};

// A tokenizer.json pattern: {"String": "..."} (literal) or {"Regex": "..."}.
Regex pattern_from_json(const nlohmann::json& pattern, const std::string& where);

}  // namespace relayllm
