// Whole-output and streaming tool-call parsing over any ToolCallFormat. A malformed
// call region leaves the output as text; nothing here throws on model output.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "relayllm/tools/tool_call_format.h"

namespace relayllm {

struct ToolCall {
  std::string name;
  std::string arguments;  // JSON text of an object, as the model wrote it
};

struct ToolCallOutput {
  // The text before the calls (null when there is none), or the whole text when no
  // call was found.
  std::optional<std::string> content;
  std::vector<ToolCall> calls;
};

// `parallel` false keeps only the first call (parallel_tool_calls: false).
ToolCallOutput parse_tool_calls(const ToolCallFormat& format, std::string_view text,
                                bool parallel = true);

// One piece of a streamed call: the first piece of call `index` has `first` set and
// its name (the caller adds id and type); later pieces carry argument text only.
struct ToolCallDelta {
  int32_t index = 0;
  bool first = false;
  std::string name;
  std::string arguments;
};

struct ToolStreamDelta {
  std::string content;
  std::vector<ToolCallDelta> calls;
  bool empty() const { return content.empty() && calls.empty(); }
};

// Turns an output arriving in pieces into content and call deltas. The argument
// pieces of a call concatenate to the arguments parse_tool_calls gives for the whole
// output. Text that may still become a call is held back; when the output ends without
// a valid call it is sent as content. Once a call's first piece is out it cannot be
// taken back: a call region that turns malformed later just ends there.
class ToolCallStreamer {
 public:
  ToolCallStreamer(const ToolCallFormat& format, bool parallel);
  ToolStreamDelta push(std::string_view text);
  ToolStreamDelta finish();
  size_t calls_sent() const { return args_sent_.size(); }

 private:
  ToolStreamDelta advance(const ToolCallScan& scan, bool final);

  const ToolCallFormat& format_;
  bool parallel_;
  std::string text_;
  size_t content_sent_ = 0;
  bool plain_ = false;             // decided: no calls in this output
  bool stopped_ = false;           // a streamed call region turned malformed
  std::vector<size_t> args_sent_;  // per call begun: bytes of arguments sent
};

// The parser names --tool-call-parser takes, and the format of one (Error otherwise).
const std::vector<std::string>& tool_call_parser_names();
std::unique_ptr<ToolCallFormat> make_tool_call_format(std::string_view parser_name);

}  // namespace relayllm
