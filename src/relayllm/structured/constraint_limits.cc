#include "relayllm/structured/constraint_limits.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "relayllm/common/bounded_json.h"
#include "relayllm/structured/schema_keywords.h"

namespace relayllm::structured {
namespace {

template <typename... Args>
[[noreturn]] void reject(const std::string& field, fmt::format_string<Args...> format,
                         Args&&... args) {
  throw ConstraintError(
      fmt::format("field '{}': {}", field, fmt::format(format, std::forward<Args>(args)...)));
}

void check_size(const std::string& text, const std::string& field, const ConstraintLimits& l) {
  if (text.size() > l.max_text_bytes)
    reject(field, "{} bytes, more than the {} allowed", text.size(), l.max_text_bytes);
}

// Keywords whose value is a repetition count: a grammar holds that many copies of a rule.
bool is_count_keyword(const std::string& key) {
  return key == "minItems" || key == "maxItems" || key == "minLength" || key == "maxLength" ||
         key == "minProperties" || key == "maxProperties" || key == "minContains" ||
         key == "maxContains";
}

void walk_schema(const nlohmann::json& node, const std::string& field, const ConstraintLimits& l) {
  if (node.is_array()) {
    for (const auto& item : node) walk_schema(item, field, l);
    return;
  }
  if (!node.is_object()) return;
  for (const auto& [key, value] : node.items()) {
    if (is_count_keyword(key) && value.is_number()) {
      const double v = value.get<double>();
      if (v > double(l.max_repeat))
        reject(field, "'{}' is {}, more than the {} allowed", key, value.dump(), l.max_repeat);
    } else if (key == "pattern" && value.is_string()) {
      check_regex_limits(value.get<std::string>(), field, l);
    }
    walk_schema(value, field, l);
  }
}

}  // namespace

void check_json_schema_limits(const std::string& schema, const std::string& field,
                              const ConstraintLimits& l) {
  check_size(schema, field, l);
  nlohmann::json doc;
  try {
    doc = parse_bounded_json(schema, field, l.max_json_depth);
  } catch (const std::exception& e) {
    reject(field, "not a valid JSON schema document: {}", e.what());
  }
  if (!doc.is_object() && !doc.is_boolean())
    reject(field, "a JSON schema must be an object, got {}", doc.type_name());
  walk_schema(doc, field, l);
  check_schema_keywords(doc, field);
}

void check_regex_limits(const std::string& regex, const std::string& field,
                        const ConstraintLimits& l) {
  check_size(regex, field, l);
  int depth = 0;
  bool in_class = false;
  for (size_t i = 0; i < regex.size(); ++i) {
    const char c = regex[i];
    if (c == '\\') {
      ++i;  // an escaped character is a literal
    } else if (in_class) {
      in_class = c != ']';
    } else if (c == '[') {
      in_class = true;
    } else if (c == '(') {
      if (++depth > l.max_regex_depth)
        reject(field, "groups nest deeper than {}", l.max_regex_depth);
    } else if (c == ')') {
      depth = std::max(depth - 1, 0);
    } else if (c == '{') {
      // {n}, {n,}, {n,m}: every number is a count of copies.
      size_t j = i + 1;
      while (j < regex.size() && (std::isdigit(static_cast<unsigned char>(regex[j])) ||
                                  regex[j] == ',' || regex[j] == ' ')) {
        if (std::isdigit(static_cast<unsigned char>(regex[j]))) {
          int64_t n = 0;
          while (j < regex.size() && std::isdigit(static_cast<unsigned char>(regex[j]))) {
            n = std::min<int64_t>(n * 10 + (regex[j] - '0'), int64_t(1) << 40);
            ++j;
          }
          if (n > l.max_repeat)
            reject(field, "repetition count {} is more than the {} allowed", n, l.max_repeat);
        } else {
          ++j;
        }
      }
    }
  }
}

void check_ebnf_limits(const std::string& ebnf, const std::string& field,
                       const ConstraintLimits& l) {
  check_size(ebnf, field, l);
  // The same nesting and repetition rules, outside string literals and comments.
  std::string skeleton;
  skeleton.reserve(ebnf.size());
  for (size_t i = 0; i < ebnf.size(); ++i) {
    const char c = ebnf[i];
    if (c == '"') {
      for (++i; i < ebnf.size() && ebnf[i] != '"'; ++i)
        if (ebnf[i] == '\\') ++i;
    } else if (c == '#') {
      while (i < ebnf.size() && ebnf[i] != '\n') ++i;
    } else {
      skeleton.push_back(c);
    }
  }
  check_regex_limits(skeleton, field, l);
}

namespace {

// xgrammar's regex parser reads a C string: a NUL byte ends the text early, and one at the
// start leaves it nothing to read (it then reads past its buffer). A JSON schema reaches that
// parser through `pattern`, where a NUL arrives escaped as \u0000.
void check_no_nul(const std::string& text, const std::string& field, bool json) {
  if (text.find('\0') != std::string::npos)
    reject(field, "contains a NUL character, which the grammar parser cannot take");
  if (!json) return;
  for (size_t at = text.find("\\u"); at != std::string::npos; at = text.find("\\u", at + 1))
    if (text.size() >= at + 6 && text.compare(at + 2, 4, "0000") == 0)
      reject(field,
             "contains an escaped NUL character (\\u0000), which the grammar parser "
             "cannot take");
}

}  // namespace

void check_constraint_limits(const ConstraintSpec& spec, const ConstraintLimits& l) {
  const bool json =
      spec.kind == ConstraintKind::kJsonSchema || spec.kind == ConstraintKind::kStructuralTag;
  check_no_nul(spec.text, spec.field, json);
  for (const StructuralTag& t : spec.tags) check_no_nul(t.schema, spec.field, true);
  switch (spec.kind) {
    case ConstraintKind::kJsonSchema:
      check_json_schema_limits(spec.text, spec.field, l);
      break;
    case ConstraintKind::kJsonObject:
      break;
    case ConstraintKind::kRegex:
      check_regex_limits(spec.text, spec.field, l);
      break;
    case ConstraintKind::kEbnf:
      check_ebnf_limits(spec.text, spec.field, l);
      break;
    case ConstraintKind::kChoice: {
      if (spec.choices.empty()) reject(spec.field, "the list of choices is empty");
      if (spec.choices.size() > l.max_choices)
        reject(spec.field, "{} choices, more than the {} allowed", spec.choices.size(),
               l.max_choices);
      size_t total = 0;
      for (const std::string& c : spec.choices) total += c.size();
      if (total > l.max_text_bytes)
        reject(spec.field, "the choices hold {} bytes, more than the {} allowed", total,
               l.max_text_bytes);
      break;
    }
    case ConstraintKind::kStructuralTag: {
      if (spec.tags.empty()) reject(spec.field, "no tags");
      if (spec.triggers.empty()) reject(spec.field, "no triggers");
      if (spec.tags.size() > l.max_choices)
        reject(spec.field, "{} tags, more than the {} allowed", spec.tags.size(), l.max_choices);
      for (const StructuralTag& t : spec.tags) check_json_schema_limits(t.schema, spec.field, l);
      break;
    }
  }
}

}  // namespace relayllm::structured
