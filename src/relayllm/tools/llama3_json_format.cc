// Llama 3.1/3.2/3.3 JSON tool calls (vLLM's "llama3_json"): the whole output is
//   {"name": "f", "parameters": {...}}
// optionally after <|python_tag|>, several calls separated by ';'. An output that
// does not start with '{' (or the tag) is plain text; as in vLLM there is no content
// beside calls.
#include "relayllm/tools/tool_call_format.h"

namespace relayllm {
namespace {

constexpr std::string_view kPythonTag = "<|python_tag|>";

class Llama3JsonFormat : public ToolCallFormat {
 public:
  ToolCallScan scan(std::string_view text, bool final) const override {
    ToolCallScan out;
    size_t pos = skip_json_space(text, 0);
    std::string_view rest = text.substr(pos);
    if (rest.substr(0, kPythonTag.size()) == kPythonTag) {
      pos = skip_json_space(text, pos + kPythonTag.size());
    } else if (!final && kPythonTag.substr(0, rest.size()) == rest) {
      out.hold_back = text.size();  // only space so far, or the tag on its way
      return out;
    }
    if (pos < text.size() && text[pos] != '{') {
      if (pos > 0 && text.substr(skip_json_space(text, 0), kPythonTag.size()) == kPythonTag)
        out.calls_started = out.malformed = true;  // the tag, then no call
      return out;
    }
    out.calls_started = true;
    out.content_end = 0;
    while (pos < text.size()) {
      PartialCall call;
      size_t end = 0;
      ScanStatus status = scan_call_object(text, pos, end, call);
      if (status == ScanStatus::kInvalid) {
        out.malformed = true;
        return out;
      }
      out.calls.push_back(std::move(call));
      if (status == ScanStatus::kIncomplete) return out;
      pos = skip_json_space(text, end);
      if (pos == text.size()) return out;
      if (text[pos] != ';') {
        out.malformed = true;
        return out;
      }
      pos = skip_json_space(text, pos + 1);
    }
    return out;
  }
};

}  // namespace

std::unique_ptr<ToolCallFormat> make_llama3_json_format() {
  return std::make_unique<Llama3JsonFormat>();
}

}  // namespace relayllm
