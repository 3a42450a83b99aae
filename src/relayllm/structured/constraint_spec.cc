#include "relayllm/structured/constraint_spec.h"

#include <fmt/format.h>

namespace relayllm::structured {

namespace {

bool json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool json_structural(char c) {
  return c == '{' || c == '}' || c == '[' || c == ']' || c == ':' || c == ',';
}

}  // namespace

std::string strip_json_whitespace(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < text.size()) {
        out += text[++i];  // an escaped character, a quote included
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (!json_space(c)) {
      out += c;
      in_string = c == '"';
      continue;
    }
    size_t end = i;
    while (end < text.size() && json_space(text[end])) ++end;
    const bool after_structural = out.empty() || json_structural(out.back());
    const bool before_structural = end == text.size() || json_structural(text[end]);
    if (!after_structural && !before_structural) out += ' ';  // keeps two tokens apart
    i = end - 1;
  }
  return out;
}

std::string ConstraintSpec::cache_key() const {
  const bool json = kind == ConstraintKind::kJsonSchema;
  const std::string& body = json ? strip_json_whitespace(text) : text;
  // Lengths before texts keep two different specs from ever spelling the same key.
  std::string key =
      fmt::format("{}|{}|{}|{}:", int(kind), int(any_whitespace), int(strict), body.size());
  key += body;
  for (const std::string& c : choices) key += fmt::format("|c{}:{}", c.size(), c);
  for (const StructuralTag& t : tags) {
    const std::string schema = strip_json_whitespace(t.schema);
    key += fmt::format("|t{}:{}{}:{}{}:{}", t.begin.size(), t.begin, schema.size(), schema,
                       t.end.size(), t.end);
  }
  for (const std::string& t : triggers) key += fmt::format("|g{}:{}", t.size(), t);
  return key;
}

}  // namespace relayllm::structured
