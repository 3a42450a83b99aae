// Hermes and Qwen 2.5/3 (vLLM's "hermes"): text, then calls written as
//   <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>
// one tag per call. As in vLLM, the last tag may stay unclosed at the end of the
// output, and text after the calls is dropped.
#include "relayllm/tools/tool_call_format.h"

namespace relayllm {
namespace {

constexpr std::string_view kOpen = "<tool_call>";
constexpr std::string_view kClose = "</tool_call>";

class HermesFormat : public ToolCallFormat {
 public:
  ToolCallScan scan(std::string_view text, bool final) const override {
    ToolCallScan out;
    size_t start = text.find(kOpen);
    if (start == std::string_view::npos) {
      out.hold_back = partial_marker_suffix(text, kOpen);
      return out;
    }
    out.calls_started = true;
    out.content_end = start;
    size_t pos = start;
    while (true) {
      PartialCall call;
      size_t end = 0;
      ScanStatus status = scan_call_object(text, pos + kOpen.size(), end, call);
      if (status == ScanStatus::kInvalid) {
        out.malformed = true;
        return out;
      }
      out.calls.push_back(std::move(call));
      if (status == ScanStatus::kIncomplete) return out;
      pos = skip_json_space(text, end);
      std::string_view rest = text.substr(pos);
      if (rest.substr(0, kClose.size()) == kClose) {
        pos += kClose.size();
      } else if (rest.empty() || (!final && kClose.substr(0, rest.size()) == rest)) {
        return out;  // an unclosed last call, or its closing tag on its way
      } else {
        out.malformed = true;  // text inside the tag after the object
        return out;
      }
      size_t next = text.find(kOpen, pos);
      if (next == std::string_view::npos) return out;
      pos = next;
    }
  }
  bool keeps_special_tokens() const override { return true; }
};

}  // namespace

std::unique_ptr<ToolCallFormat> make_hermes_format() { return std::make_unique<HermesFormat>(); }

}  // namespace relayllm
