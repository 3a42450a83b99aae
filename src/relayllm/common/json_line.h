// One JSON value per line (JSON Lines output, server-sent events), safe for every line splitter.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace relayllm {

// Escapes U+0085, U+2028 and U+2029 in serialized JSON as \u0085, \u2028 and \u2029. JSON allows
// them raw inside strings, but Python's str.splitlines() and JavaScript's line terminators split
// on them, so a generated text holding one would cut its JSON line in two for such readers. They
// can only occur inside strings (JSON's structure is ASCII), so the result is the same value.
std::string escape_line_separators(std::string json_text);

// `value` serialized on one line (invalid UTF-8 replaced by U+FFFD), line separators escaped.
std::string json_line(const nlohmann::json& value);
std::string json_line(const nlohmann::ordered_json& value);

}  // namespace relayllm
