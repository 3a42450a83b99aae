#include "relayllm/tools/tool_call_parser.h"

#include "relayllm/common/error.h"

namespace relayllm {
namespace {

std::string_view trim_right(std::string_view s) {
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\n' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// A whole output's scan holds usable calls only if every call it began is complete.
bool all_complete(const ToolCallScan& scan) {
  if (scan.calls.empty()) return false;
  for (const PartialCall& call : scan.calls)
    if (!call.complete) return false;
  return true;
}

}  // namespace

ToolCallOutput parse_tool_calls(const ToolCallFormat& format, std::string_view text,
                                bool parallel) {
  ToolCallOutput out;
  ToolCallScan scan = format.scan(text, true);
  if (!scan.calls_started || scan.malformed || !all_complete(scan)) {
    out.content = std::string(text);
    return out;
  }
  std::string_view before = trim_right(text.substr(0, scan.content_end));
  if (!before.empty()) out.content = std::string(before);
  for (const PartialCall& call : scan.calls) {
    out.calls.push_back({call.name, call.arguments});
    if (!parallel) break;
  }
  return out;
}

ToolCallStreamer::ToolCallStreamer(const ToolCallFormat& format, bool parallel)
    : format_(format), parallel_(parallel) {}

ToolStreamDelta ToolCallStreamer::push(std::string_view text) {
  text_ += text;
  if (stopped_) return {};
  if (plain_) {
    ToolStreamDelta delta;
    delta.content = text_.substr(content_sent_);
    content_sent_ = text_.size();
    return delta;
  }
  return advance(format_.scan(text_, false), false);
}

ToolStreamDelta ToolCallStreamer::finish() {
  if (stopped_ || plain_) return push("");
  ToolCallScan scan = format_.scan(text_, true);
  if (scan.calls_started && !scan.malformed && !all_complete(scan)) scan.malformed = true;
  return advance(scan, true);
}

ToolStreamDelta ToolCallStreamer::advance(const ToolCallScan& scan, bool final) {
  ToolStreamDelta delta;
  auto send_content_to = [&](size_t end) {
    if (end > content_sent_) {
      delta.content += text_.substr(content_sent_, end - content_sent_);
      content_sent_ = end;
    }
  };
  if (!scan.calls_started) {
    send_content_to(final ? text_.size() : text_.size() - std::min(scan.hold_back, text_.size()));
    return delta;
  }
  if (scan.malformed) {
    if (args_sent_.empty()) {
      plain_ = true;  // nothing of a call went out: the whole output is text after all
      send_content_to(text_.size());
    } else {
      stopped_ = true;
    }
    return delta;
  }
  send_content_to(scan.content_end);
  for (size_t i = 0; i < scan.calls.size(); ++i) {
    if (i > 0 && !parallel_) break;
    const PartialCall& call = scan.calls[i];
    if (i == args_sent_.size()) {
      if (!call.name_complete) break;
      args_sent_.push_back(0);
      delta.calls.push_back({int32_t(i), true, call.name, ""});
    }
    if (call.arguments.size() > args_sent_[i]) {
      std::string piece = call.arguments.substr(args_sent_[i]);
      args_sent_[i] = call.arguments.size();
      if (!delta.calls.empty() && delta.calls.back().index == int32_t(i))
        delta.calls.back().arguments += piece;
      else
        delta.calls.push_back({int32_t(i), false, "", std::move(piece)});
    }
  }
  return delta;
}

const std::vector<std::string>& tool_call_parser_names() {
  static const std::vector<std::string> kNames = {"hermes", "llama3_json", "mistral"};
  return kNames;
}

std::unique_ptr<ToolCallFormat> make_tool_call_format(std::string_view parser_name) {
  if (parser_name == "hermes") return make_hermes_format();
  if (parser_name == "llama3_json") return make_llama3_json_format();
  if (parser_name == "mistral") return make_mistral_format();
  fail("--tool-call-parser '{}' is not one of hermes, llama3_json, mistral", parser_name);
}

}  // namespace relayllm
