// The GPT-2 byte <-> character mapping: every byte gets a printable character so byte-level
// BPE vocabularies can be stored as text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace relayllm::byte_level {

// UTF-8 of the character standing for `byte`.
const std::string& byte_to_char(uint8_t byte);

// The byte a code point stands for, or -1 when it is not one of the 256 mapped characters.
int char_to_byte(uint32_t code_point);

// Maps every byte of `text` to its character.
std::string encode(std::string_view text);

}  // namespace relayllm::byte_level
