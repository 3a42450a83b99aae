// Tool calls in a model's output, one format per model family (vLLM's parser names:
// llama3_json, hermes, mistral) plus the two shapes a grammar forces for
// tool_choice "required" and a named function. A format only scans text; whole-output
// parsing and streaming (tool_call_parser.h) are written once on top of it, so both
// modes agree on what a call is.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "relayllm/tools/json_scan.h"

namespace relayllm {

// What a format sees in an output, or in the part of it generated so far.
struct ToolCallScan {
  // No call has begun: the text is plain content, except its last `hold_back` bytes,
  // which may be the start of a call marker (a stream holds them back).
  bool calls_started = false;
  size_t hold_back = 0;
  // Calls have begun: text[0, content_end) is the content before them.
  size_t content_end = 0;
  // The calls' region cannot be read as calls (then the output stays text).
  bool malformed = false;
  std::vector<PartialCall> calls;
};

class ToolCallFormat {
 public:
  virtual ~ToolCallFormat() = default;
  // `final`: the text is the whole output (a format may accept an unclosed last tag).
  virtual ToolCallScan scan(std::string_view text, bool final) const = 0;
  // The call markers are special tokens, which detokenizing must keep (vLLM's
  // parsers for these families turn skip_special_tokens off the same way).
  virtual bool keeps_special_tokens() const { return false; }
  // Mistral's templates accept only tool-call ids of 9 letters and digits.
  virtual bool short_call_ids() const { return false; }
};

// The family formats, by vLLM's --tool-call-parser name.
std::unique_ptr<ToolCallFormat> make_hermes_format();
std::unique_ptr<ToolCallFormat> make_llama3_json_format();
std::unique_ptr<ToolCallFormat> make_mistral_format();
// tool_choice {"type": "function", "function": {"name": N}}: the whole output is the
// arguments object of N (as vLLM constrains it).
std::unique_ptr<ToolCallFormat> make_named_call_format(std::string function_name);
// tool_choice "required": the whole output is [{"name": ..., "parameters": {...}}, ...].
std::unique_ptr<ToolCallFormat> make_required_calls_format();

// Reads `[call, call, ...]` starting at `pos` (the bracket) into scan.calls; marks the
// scan malformed when it is not such an array. Returns one past the bracket, or npos
// while incomplete.
size_t scan_call_array(std::string_view text, size_t pos, ToolCallScan& scan);

}  // namespace relayllm
