// Canonical Unicode normalization (NFD, NFC) for the tokenizer normalizers.
#pragma once

#include <string>
#include <string_view>

namespace relayllm {

// Input must be valid UTF-8.
std::string to_nfd(std::string_view text);
std::string to_nfc(std::string_view text);

}  // namespace relayllm
