#include "relayllm/engine/stop_checker.h"

#include <algorithm>
#include <utility>

#include "relayllm/common/error.h"

namespace relayllm {

StopChecker::StopChecker(std::vector<std::string> stops, bool include_stop_str_in_output)
    : stops_(std::move(stops)), include_stop_(include_stop_str_in_output) {
  for (size_t i = 0; i < stops_.size(); ++i) {
    if (stops_[i].empty()) fail("stop checker: stop string {} is empty", i);
    max_len_ = std::max(max_len_, stops_[i].size());
  }
}

std::optional<StopMatch> StopChecker::check(std::string_view text, size_t new_bytes) const {
  new_bytes = std::min(new_bytes, text.size());
  if (new_bytes == 0) return std::nullopt;
  const size_t new_begin = text.size() - new_bytes;

  std::optional<StopMatch> best;
  size_t best_begin = 0;
  size_t best_end = 0;
  for (size_t i = 0; i < stops_.size(); ++i) {
    const std::string& s = stops_[i];
    // The earliest start whose match would end inside the new bytes.
    const size_t from = new_begin + 1 >= s.size() ? new_begin + 1 - s.size() : 0;
    const size_t pos = text.find(s, from);
    if (pos == std::string_view::npos) continue;
    const size_t end = pos + s.size();
    if (!best || end < best_end || (end == best_end && pos < best_begin)) {
      best = StopMatch{i, s, include_stop_ ? end : pos};
      best_begin = pos;
      best_end = end;
    }
  }
  return best;
}

std::optional<StopMatch> StopChecker::apply(std::string& text, size_t new_bytes) const {
  auto m = check(text, new_bytes);
  if (m) text.resize(m->text_length);
  return m;
}

size_t StopChecker::hold_back(std::string_view text) const {
  if (include_stop_) return 0;
  size_t held = 0;
  for (const std::string& s : stops_) {
    // Only lengths above the current best can raise it.
    for (size_t len = std::min(s.size() - 1, text.size()); len > held; --len) {
      if (text.ends_with(std::string_view(s).substr(0, len))) {
        held = len;
        break;
      }
    }
  }
  return held;
}

}  // namespace relayllm
