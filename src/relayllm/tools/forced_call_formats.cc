// The shapes of forced tool calls, as vLLM constrains them with a grammar: a named
// function's arguments object alone, or for "required" a list of calls. They need no
// family parser, so any model can be made to call a tool.
#include "relayllm/tools/tool_call_format.h"

namespace relayllm {
namespace {

// The opening both forced shapes share: leading space skipped, an output of only space held
// back, anything else that does not start with `opener` malformed. Returns the opener's
// position, or npos when `out` is already the scan's answer.
size_t open_forced_shape(std::string_view text, char opener, ToolCallScan& out) {
  const size_t pos = skip_json_space(text, 0);
  if (pos == text.size()) {
    out.hold_back = text.size();
    return std::string_view::npos;
  }
  out.calls_started = true;
  if (text[pos] != opener) {
    out.malformed = true;
    return std::string_view::npos;
  }
  return pos;
}

class NamedCallFormat : public ToolCallFormat {
 public:
  explicit NamedCallFormat(std::string name) : name_(std::move(name)) {}
  ToolCallScan scan(std::string_view text, bool) const override {
    ToolCallScan out;
    const size_t pos = open_forced_shape(text, '{', out);
    if (pos == std::string_view::npos) return out;
    PartialCall call;
    call.name = name_;
    call.name_complete = true;
    size_t end = 0;
    ScanStatus status = scan_json_value(text, pos, end);
    if (status == ScanStatus::kInvalid) {
      out.malformed = true;
      return out;
    }
    if (status == ScanStatus::kIncomplete) {
      std::string_view partial = text.substr(pos);
      while (!partial.empty() && skip_json_space(partial, partial.size() - 1) == partial.size())
        partial.remove_suffix(1);
      call.arguments = std::string(partial);
    } else {
      // Wrap the arguments as a call object, so that one checker validates both shapes.
      std::string wrapped = "{\"name\": \"x\", \"arguments\": ";
      wrapped.append(text.substr(pos, end - pos)).append("}");
      PartialCall check;
      size_t unused = 0;
      if (scan_call_object(wrapped, 0, unused, check) != ScanStatus::kComplete ||
          skip_json_space(text, end) != text.size()) {
        out.malformed = true;
        return out;
      }
      call.arguments = std::string(text.substr(pos, end - pos));
      call.arguments_seen = call.complete = true;
    }
    out.calls.push_back(std::move(call));
    return out;
  }

 private:
  std::string name_;
};

class RequiredCallsFormat : public ToolCallFormat {
 public:
  ToolCallScan scan(std::string_view text, bool) const override {
    ToolCallScan out;
    const size_t pos = open_forced_shape(text, '[', out);
    if (pos == std::string_view::npos) return out;
    size_t end = scan_call_array(text, pos, out);
    if (end != std::string_view::npos && skip_json_space(text, end) != text.size())
      out.malformed = true;
    return out;
  }
};

}  // namespace

size_t scan_call_array(std::string_view text, size_t pos, ToolCallScan& scan) {
  ++pos;  // the '['
  while (true) {
    pos = skip_json_space(text, pos);
    if (pos >= text.size()) return std::string_view::npos;
    if (text[pos] == ']') {
      if (scan.calls.empty()) scan.malformed = true;  // an empty list calls nothing
      return pos + 1;
    }
    PartialCall call;
    size_t end = 0;
    ScanStatus status = scan_call_object(text, pos, end, call);
    if (status == ScanStatus::kInvalid) {
      scan.malformed = true;
      return std::string_view::npos;
    }
    scan.calls.push_back(std::move(call));
    if (status == ScanStatus::kIncomplete) return std::string_view::npos;
    pos = skip_json_space(text, end);
    if (pos >= text.size()) return std::string_view::npos;
    if (text[pos] == ',') {
      ++pos;
    } else if (text[pos] != ']') {
      scan.malformed = true;
      return std::string_view::npos;
    }
  }
}

std::unique_ptr<ToolCallFormat> make_named_call_format(std::string function_name) {
  return std::make_unique<NamedCallFormat>(std::move(function_name));
}

std::unique_ptr<ToolCallFormat> make_required_calls_format() {
  return std::make_unique<RequiredCallsFormat>();
}

}  // namespace relayllm
