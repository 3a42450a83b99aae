// JSON parsing with a bound on nesting depth, for files and bodies that may be hostile.
// nlohmann's parser itself is iterative, but copying, comparing, dumping and every
// recursive consumer of the value (template conversion, tokenizer components) recurse
// once per level: a value nested tens of thousands deep overflows the stack there. So
// depth is refused at parse time, where it costs nothing, with one line naming the source.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace relayllm {

// Deeper than any real config, tokenizer or safetensors header (they nest < 10 levels).
constexpr int kMaxModelJsonDepth = 64;

// Parses `text`; throws Error "<source>: ..." for invalid JSON, a number that does not fit a
// double (naming the object key it belongs to), or nesting deeper than max_depth.
nlohmann::json parse_bounded_json(std::string_view text, const std::string& source,
                                  int max_depth = kMaxModelJsonDepth);

// Reads the whole file and parses it as above; the source named in errors is the path.
nlohmann::json read_bounded_json_file(const std::string& path, int max_depth = kMaxModelJsonDepth);

}  // namespace relayllm
