// Parses a request body into JSON without trusting it: nesting deeper than a
// limit is refused while parsing (before any recursive code sees the value),
// and every syntax error or out-of-range number becomes an ApiError 400 that
// names where in the body it happened ("field 'temperature': number overflow").
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

namespace relayllm {

// Default for --max-json-depth: far deeper than any real request (tool schemas
// nest a dozen levels), far shallower than what overflows a recursive walk.
inline constexpr int kDefaultMaxJsonDepth = 128;

// Throws ApiError(400) on malformed JSON, numbers outside double range, and
// arrays/objects nested more than `max_depth` levels (the top level is 1).
nlohmann::json parse_json_body(std::string_view text, int max_depth);
// The same, keeping the keys in the order of the body.
nlohmann::ordered_json parse_json_body_ordered(std::string_view text, int max_depth);

}  // namespace relayllm
