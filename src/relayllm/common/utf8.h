// UTF-8 helpers: validation, decoding and the one encoder (tokenizer and chat templates).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace relayllm::utf8 {

// Length of the UTF-8 sequence a lead byte announces (1 for stray bytes, so loops always advance).
int sequence_length(unsigned char lead);

// Appends the UTF-8 encoding of code_point.
void append(std::string& out, uint32_t code_point);

// Decodes valid UTF-8 into code points (callers make the input valid first with to_valid()).
std::vector<uint32_t> decode(std::string_view text);
std::string encode(const std::vector<uint32_t>& code_points);

bool is_valid(std::string_view bytes);

// Replaces each maximal invalid subsequence by U+FFFD, the same policy as Rust's
// String::from_utf8_lossy and Python's errors="replace", so decoded text matches theirs.
std::string to_valid(std::string_view bytes);

// Number of bytes at the end of `bytes` that start a UTF-8 sequence still missing continuation
// bytes (0 when the text ends on a character boundary or with bytes that can never complete).
size_t incomplete_tail(std::string_view bytes);

// Unicode White_Space, the set Rust's char::is_whitespace uses.
bool is_whitespace(uint32_t code_point);

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

}  // namespace relayllm::utf8
