// Scanning JSON that a model is still writing: where a value ends if it is complete,
// and how far a call object ({"name": ..., "arguments": ...}) has come. The tool-call
// formats use it both on whole outputs and on the prefixes a stream has seen, so the
// same code decides what a call is in both modes.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace relayllm {

enum class ScanStatus {
  kComplete,    // the value ends inside the text
  kIncomplete,  // the text ends before the value does, and could still become one
  kInvalid,     // no continuation can make this valid JSON
};

size_t skip_json_space(std::string_view text, size_t pos);

// The end (one past) of the JSON value starting at `pos` (after any space). Checks
// the bracket structure, strings and escapes; numbers and literals are only checked
// for their characters (a complete value is still parsed before it is used).
ScanStatus scan_json_value(std::string_view text, size_t pos, size_t& end);

// A JSON string starting at `pos` (the opening quote), decoded into `out` when complete.
ScanStatus scan_json_string(std::string_view text, size_t pos, size_t& end, std::string& out);

// One tool call written as a JSON object {"name": "...", "arguments": {...}} (also
// "parameters", as Llama 3.x writes it), seen so far.
struct PartialCall {
  std::string name;
  bool name_complete = false;
  // The arguments as the model wrote them (raw JSON text of an object), up to where the
  // text ends, trailing space left out: every later scan extends it, so a stream may send
  // it piece by piece. An arguments value given as a JSON string holding an object (some
  // models do) appears only once complete, decoded.
  std::string arguments;
  bool arguments_seen = false;
  bool complete = false;  // the whole object was read and its arguments parse as an object
};

// Reads the call object starting at `pos`; `end` is one past its closing brace when
// complete. kInvalid for anything that is not such an object (a missing or empty name,
// arguments that are not an object, unknown structure).
ScanStatus scan_call_object(std::string_view text, size_t pos, size_t& end, PartialCall& call);

// The length of the longest tail of `text` that starts `marker` without being all of it:
// text a stream must hold back because the next tokens may complete the marker.
size_t partial_marker_suffix(std::string_view text, std::string_view marker);

}  // namespace relayllm
