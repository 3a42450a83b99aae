#include "relayllm/tools/json_scan.h"

#include <nlohmann/json.hpp>

namespace relayllm {
namespace {

bool is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Characters of numbers and of true/false/null.
bool is_scalar_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '-' || c == '+' || c == '.' ||
         c == 'E';
}

// Skips the string whose opening quote is at `pos`.
ScanStatus skip_string(std::string_view text, size_t pos, size_t& end) {
  for (size_t i = pos + 1; i < text.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\\') {
      if (++i >= text.size()) return ScanStatus::kIncomplete;
    } else if (c == '"') {
      end = i + 1;
      return ScanStatus::kComplete;
    } else if (c < 0x20) {
      return ScanStatus::kInvalid;  // JSON strings hold no raw control characters
    }
  }
  return ScanStatus::kIncomplete;
}

std::string_view trim_right(std::string_view s) {
  while (!s.empty() && is_json_space(s.back())) s.remove_suffix(1);
  return s;
}

bool is_json_object(std::string_view text) {
  nlohmann::json value = nlohmann::json::parse(text, nullptr, false);
  return !value.is_discarded() && value.is_object();
}

}  // namespace

size_t skip_json_space(std::string_view text, size_t pos) {
  while (pos < text.size() && is_json_space(text[pos])) ++pos;
  return pos;
}

ScanStatus scan_json_value(std::string_view text, size_t pos, size_t& end) {
  pos = skip_json_space(text, pos);
  std::string closers;  // what each open bracket expects
  for (size_t i = pos; i < text.size();) {
    char c = text[i];
    if (c == '"') {
      size_t string_end = 0;
      ScanStatus s = skip_string(text, i, string_end);
      if (s != ScanStatus::kComplete) return s;
      i = string_end;
      if (closers.empty()) {
        end = i;
        return ScanStatus::kComplete;
      }
      continue;
    }
    if (c == '{' || c == '[') {
      closers.push_back(c == '{' ? '}' : ']');
    } else if (c == '}' || c == ']') {
      if (closers.empty() || closers.back() != c) return ScanStatus::kInvalid;
      closers.pop_back();
      if (closers.empty()) {
        end = i + 1;
        return ScanStatus::kComplete;
      }
    } else if (closers.empty()) {
      // A scalar at the top: it ends at the first character that cannot continue it.
      size_t j = i;
      while (j < text.size() && is_scalar_char(text[j])) ++j;
      if (j == i) return ScanStatus::kInvalid;
      if (j == text.size()) return ScanStatus::kIncomplete;
      end = j;
      return ScanStatus::kComplete;
    } else if (!is_json_space(c) && c != ',' && c != ':' && !is_scalar_char(c)) {
      return ScanStatus::kInvalid;
    }
    ++i;
  }
  return ScanStatus::kIncomplete;
}

ScanStatus scan_json_string(std::string_view text, size_t pos, size_t& end, std::string& out) {
  if (pos >= text.size()) return ScanStatus::kIncomplete;
  if (text[pos] != '"') return ScanStatus::kInvalid;
  ScanStatus s = skip_string(text, pos, end);
  if (s != ScanStatus::kComplete) return s;
  nlohmann::json value = nlohmann::json::parse(text.substr(pos, end - pos), nullptr, false);
  if (value.is_discarded() || !value.is_string()) return ScanStatus::kInvalid;  // a bad escape
  out = value.get<std::string>();
  return ScanStatus::kComplete;
}

ScanStatus scan_call_object(std::string_view text, size_t pos, size_t& end, PartialCall& call) {
  constexpr auto kIncomplete = ScanStatus::kIncomplete;
  constexpr auto kInvalid = ScanStatus::kInvalid;
  pos = skip_json_space(text, pos);
  if (pos >= text.size()) return kIncomplete;
  if (text[pos] != '{') return kInvalid;
  ++pos;
  bool expect_key = false;  // after a comma, only a key may come
  while (true) {
    pos = skip_json_space(text, pos);
    if (pos >= text.size()) return kIncomplete;
    if (text[pos] == '}' && !expect_key) {
      if (!call.name_complete || call.name.empty()) return kInvalid;
      if (!call.arguments_seen) call.arguments = "{}";
      call.complete = true;
      end = pos + 1;
      return ScanStatus::kComplete;
    }
    std::string key;
    size_t next = 0;
    ScanStatus s = scan_json_string(text, pos, next, key);
    if (s != ScanStatus::kComplete) return s;
    pos = skip_json_space(text, next);
    if (pos >= text.size()) return kIncomplete;
    if (text[pos] != ':') return kInvalid;
    pos = skip_json_space(text, pos + 1);
    if (pos >= text.size()) return kIncomplete;
    if (key == "name") {
      if (call.name_complete) return kInvalid;  // a second name: not a call we can trust
      s = scan_json_string(text, pos, next, call.name);
      if (s != ScanStatus::kComplete) return s;
      call.name_complete = true;
      pos = next;
    } else if (key == "arguments" || key == "parameters") {
      if (call.arguments_seen) return kInvalid;
      if (text[pos] == '"') {
        std::string inner;
        s = scan_json_string(text, pos, next, inner);
        if (s != ScanStatus::kComplete) return s;
        std::string_view trimmed = trim_right(inner);
        trimmed.remove_prefix(skip_json_space(trimmed, 0));
        if (!is_json_object(trimmed)) return kInvalid;
        call.arguments = std::string(trimmed);
      } else if (text[pos] == '{') {
        s = scan_json_value(text, pos, next);
        if (s == ScanStatus::kIncomplete) {
          call.arguments = std::string(trim_right(text.substr(pos)));
          return kIncomplete;
        }
        if (s == kInvalid || !is_json_object(text.substr(pos, next - pos))) return kInvalid;
        call.arguments = std::string(text.substr(pos, next - pos));
      } else {
        return kInvalid;
      }
      call.arguments_seen = true;
      pos = next;
    } else {
      s = scan_json_value(text, pos, next);
      if (s != ScanStatus::kComplete) return s;
      pos = next;
    }
    pos = skip_json_space(text, pos);
    if (pos >= text.size()) return kIncomplete;
    if (text[pos] == ',') {
      ++pos;
      expect_key = true;
    } else if (text[pos] == '}') {
      expect_key = false;
    } else {
      return kInvalid;
    }
  }
}

size_t partial_marker_suffix(std::string_view text, std::string_view marker) {
  size_t longest = std::min(text.size(), marker.size() - 1);
  for (size_t k = longest; k > 0; --k)
    if (text.substr(text.size() - k) == marker.substr(0, k)) return k;
  return 0;
}

}  // namespace relayllm
