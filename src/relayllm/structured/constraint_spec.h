// What a request asks its output to follow: a JSON schema, any JSON object, a regular
// expression, one of a list of strings, an EBNF grammar, or a structural tag (free text in
// which tagged regions follow schemas). The request parser builds one from the request's
// fields (response_format, guided_*; tool choices); GrammarCompiler turns it into a
// CompiledConstraint. Plain data, no xgrammar types, so any layer may hold one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "relayllm/common/error.h"

namespace relayllm::structured {

enum class ConstraintKind {
  kJsonSchema,     // text: the schema as JSON
  kJsonObject,     // any JSON object (response_format json_object); text unused
  kRegex,          // text: the pattern (xgrammar's regex dialect, as vLLM's guided_regex)
  kChoice,         // choices: the output is exactly one of them
  kEbnf,           // text: an EBNF grammar (GBNF style) with a rule named `root`
  kStructuralTag,  // tags + triggers (see StructuralTag)
};

// A region of free text that starts with `begin`, holds JSON following `schema`, and ends
// with `end`, as in xgrammar's structural tags: e.g. begin "<tool_call>", schema of the
// call's arguments, end "</tool_call>". Outside the tagged regions the text is free; a tag's
// region starts when the text reaches one of the triggers (a prefix of some `begin`).
struct StructuralTag {
  std::string begin;
  std::string schema;  // JSON schema text
  std::string end;
};

// A request's constraint could not be built: the message names the field and the problem
// ("field 'guided_regex': ..."). The server answers 400.
class ConstraintError : public Error {
 public:
  using Error::Error;
};

struct ConstraintSpec {
  ConstraintKind kind = ConstraintKind::kJsonObject;
  std::string text;
  std::vector<std::string> choices;   // kChoice
  std::vector<StructuralTag> tags;    // kStructuralTag
  std::vector<std::string> triggers;  // kStructuralTag
  // JSON: only the compact form (one space after ':' and ','), or any whitespace between
  // tokens (vLLM 0.9.1's default, `"xgrammar:any-whitespace"` here): small models given any
  // whitespace often emit newlines until max_tokens instead of the next value.
  bool any_whitespace = false;
  // JSON schema: additionalProperties/items default to false as in OpenAI's strict mode
  // (xgrammar's strict_mode; vLLM passes its default, true).
  bool strict = true;
  // The request field it came from, named in errors: "response_format.json_schema.schema".
  std::string field;

  // The key compiled grammars are cached under: kind, options and text, JSON schema texts with
  // their insignificant whitespace removed (so the same schema sent pretty-printed or compact
  // compiles once; key order is kept, since it orders the output's properties).
  std::string cache_key() const;
};

// `text` without the whitespace JSON ignores: each run of spaces, tabs and newlines outside
// strings that touches a structural character ({}[]:,) or an end of the text. Runs between two
// other tokens stay, so an invalid text ("tr ue", "1 2") stays invalid and never meets the key
// of a valid one. Linear and without recursion, safe for hostile input.
std::string strip_json_whitespace(const std::string& text);

// Bounds on what a request may ask to compile, so a hostile input cannot take the server's
// memory or minutes of CPU: checked before any xgrammar code sees the text.
struct ConstraintLimits {
  size_t max_text_bytes = 64 * 1024;  // schema / regex / grammar text
  int32_t max_json_depth = 32;        // nesting of the schema document
  int32_t max_regex_depth = 64;       // nested groups of a regex
  int64_t max_repeat = 1024;          // minItems/maxItems/minLength/maxLength, regex {n,m}
  size_t max_choices = 1024;
  size_t max_grammar_bytes = 256 * 1024;  // the EBNF a schema or regex expands to
};

}  // namespace relayllm::structured
