// Splits a template into text and tag tokens the way jinja2 does with
// trim_blocks=True and lstrip_blocks=True (the settings Hugging Face chat
// templates are written for): whitespace control (`{%-`, `-%}`, `{%+`), comments
// dropped, one trailing newline of the source dropped.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace relayllm::jinja {

struct Token {
  enum class Kind : uint8_t {
    kText,
    kVarBegin,    // {{
    kVarEnd,      // }}
    kBlockBegin,  // {%
    kBlockEnd,    // %}
    kName,
    kString,   // text holds the decoded value
    kInteger,  // text holds the digits (underscores removed)
    kFloat,
    kOperator,  // text holds the operator: + - * / // % ** ~ == != < > <= >= = ( ) [ ] { } , . : |
    kEof,
  };
  Kind kind;
  std::string text;
  size_t offset;  // into the (newline-normalized) source, for error positions
};

// Maps offsets to 1-based line:column for error messages.
class SourcePositions {
 public:
  explicit SourcePositions(std::string_view source);
  std::string describe(size_t offset) const;  // "line L, column C"

 private:
  std::vector<size_t> line_starts_;
};

// Newlines normalized to "\n" first, as jinja2 does; positions refer to the result.
std::string normalize_newlines(std::string_view source);

// Error (with line and column) on an unterminated tag, comment or string, or an
// unknown character inside a tag.
std::vector<Token> tokenize_template(std::string_view source);

}  // namespace relayllm::jinja
