// Mistral Instruct v0.3 and later (vLLM's "mistral"): text, then
//   [TOOL_CALLS] [{"name": "f", "arguments": {...}}, ...]
// where [TOOL_CALLS] is a special token. A single object instead of the list is
// accepted too. Call ids are 9 letters and digits, the only ids Mistral's chat
// templates take back in the history.
#include "relayllm/tools/tool_call_format.h"

namespace relayllm {
namespace {

constexpr std::string_view kMarker = "[TOOL_CALLS]";

class MistralFormat : public ToolCallFormat {
 public:
  ToolCallScan scan(std::string_view text, bool) const override {
    ToolCallScan out;
    size_t start = text.find(kMarker);
    if (start == std::string_view::npos) {
      out.hold_back = partial_marker_suffix(text, kMarker);
      return out;
    }
    out.calls_started = true;
    out.content_end = start;
    size_t pos = skip_json_space(text, start + kMarker.size());
    if (pos >= text.size()) return out;
    if (text[pos] == '[') {
      scan_call_array(text, pos, out);
    } else {
      PartialCall call;
      size_t end = 0;
      ScanStatus status = scan_call_object(text, pos, end, call);
      if (status == ScanStatus::kInvalid) {
        out.malformed = true;
        return out;
      }
      out.calls.push_back(std::move(call));
    }
    return out;
  }
  bool keeps_special_tokens() const override { return true; }
  bool short_call_ids() const override { return true; }
};

}  // namespace

std::unique_ptr<ToolCallFormat> make_mistral_format() { return std::make_unique<MistralFormat>(); }

}  // namespace relayllm
