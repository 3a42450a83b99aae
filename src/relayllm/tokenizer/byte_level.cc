#include "relayllm/tokenizer/byte_level.h"

#include <array>

#include "relayllm/common/utf8.h"

namespace relayllm::byte_level {
namespace {

// Printable Latin-1 bytes keep their own code point; the other 68 bytes are numbered from U+0100
// in byte order, which is the mapping every byte-level vocabulary was built with.
uint32_t code_point_of(uint8_t b) {
  auto printable = [](int x) {
    return (x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE);
  };
  if (printable(b)) return b;
  uint32_t n = 0;
  for (int x = 0; x < b; ++x) n += printable(x) ? 0 : 1;
  return 0x100 + n;
}

struct Tables {
  std::array<std::string, 256> chars;
  std::array<int16_t, 0x144> bytes;  // code points up to U+0143 cover the whole mapping
  Tables() {
    bytes.fill(-1);
    for (int b = 0; b < 256; ++b) {
      uint32_t cp = code_point_of(uint8_t(b));
      utf8::append(chars[b], cp);
      bytes[cp] = int16_t(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

const std::string& byte_to_char(uint8_t byte) { return tables().chars[byte]; }

int char_to_byte(uint32_t cp) { return cp < tables().bytes.size() ? tables().bytes[cp] : -1; }

std::string encode(std::string_view text) {
  const auto& t = tables();
  std::string out;
  out.reserve(text.size() * 2);
  for (char c : text) out.append(t.chars[static_cast<uint8_t>(c)]);
  return out;
}

}  // namespace relayllm::byte_level
