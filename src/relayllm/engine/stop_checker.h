// Stop strings over detokenized output, for whole responses and for streaming.
//
// Text is UTF-8 and handled as bytes: stop strings are valid UTF-8 too, so a byte match always
// starts and ends on character boundaries, and every count below is in bytes.
//
// Streaming use, after each new piece of text is appended to `text`:
//   if (auto m = checker.check(text, piece.size())) {
//     text.resize(m->text_length);          // send text[sent, text_length), finish with "stop"
//   } else {
//     size_t ready = text.size() - checker.hold_back(text);
//     // send text[sent, ready); sent = ready
//   }
// and when the request ends for another reason (EOS, length), send everything still held.
// Held-back text is never more than a stop string's length - 1, and a stop string that is
// found later always starts at or after the end of what was sent, so nothing sent is retracted.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "relayllm/engine/sampling_params.h"

namespace relayllm {

struct StopMatch {
  size_t stop_index = 0;   // into StopChecker::stops()
  std::string_view stop;   // the matched stop string; views the checker's storage
  size_t text_length = 0;  // length to cut the output to (stop string excluded unless included)
};

class StopChecker {
 public:
  StopChecker() = default;
  StopChecker(std::vector<std::string> stops, bool include_stop_str_in_output);
  explicit StopChecker(const SamplingParams& params)
      : StopChecker(params.stop, params.include_stop_str_in_output) {}

  bool empty() const { return stops_.empty(); }
  const std::vector<std::string>& stops() const { return stops_; }
  size_t max_stop_length() const { return max_len_; }

  // `text` is the whole output so far, whose last `new_bytes` bytes were just appended. Finds a
  // stop string that ends inside those new bytes (earlier text was checked already), searching
  // only the last new_bytes + max_stop_length - 1 bytes. When several match, the one that ends
  // first wins, then the one that starts first, then the earlier in the list: this is the one a
  // byte-by-byte stream would have stopped at, so the result does not depend on how the text
  // was split into pieces.
  std::optional<StopMatch> check(std::string_view text, size_t new_bytes) const;

  // check(), and on a match cuts `text` to match->text_length.
  std::optional<StopMatch> apply(std::string& text, size_t new_bytes) const;

  // How many trailing bytes of `text` must not be streamed yet because they are a proper prefix
  // of some stop string. Zero when stop strings are included in the output: then everything
  // before a stop string's end is output anyway.
  size_t hold_back(std::string_view text) const;

 private:
  std::vector<std::string> stops_;
  bool include_stop_ = false;
  size_t max_len_ = 0;
};

}  // namespace relayllm
