#include "relayllm/structured/token_table.h"

#include <algorithm>

#include "relayllm/common/error.h"
#include "relayllm/common/utf8.h"
#include "relayllm/tokenizer/byte_level.h"

namespace relayllm::structured {
namespace {

constexpr std::string_view kSentencePieceSpace = "\xe2\x96\x81";  // U+2581

VocabEncoding detect_encoding(const Tokenizer& tokenizer) {
  // Byte fallback vocabularies carry the 256 byte tokens by these names.
  if (tokenizer.token_to_id("<0x0A>") && tokenizer.token_to_id("<0x20>"))
    return VocabEncoding::kByteFallback;
  // Byte-level ones spell space and newline as these characters.
  if (tokenizer.token_to_id("\xc4\xa0") || tokenizer.token_to_id("\xc4\x8a"))  // U+0120, U+010A
    return VocabEncoding::kByteLevel;
  return VocabEncoding::kRaw;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Every character must stand for a byte; a token that is not (an added token kept as plain
// text) is its own text.
std::string byte_level_bytes(const std::string& token) {
  std::string out;
  for (uint32_t cp : utf8::decode(token)) {
    int b = byte_level::char_to_byte(cp);
    if (b < 0) return token;
    out.push_back(char(b));
  }
  return out;
}

std::string byte_fallback_bytes(const std::string& token) {
  if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>') {
    int hi = hex_digit(token[3]), lo = hex_digit(token[4]);
    if (hi >= 0 && lo >= 0) return std::string(1, char(hi * 16 + lo));
  }
  std::string out;
  for (size_t i = 0; i < token.size();) {
    if (token.compare(i, kSentencePieceSpace.size(), kSentencePieceSpace) == 0) {
      out.push_back(' ');
      i += kSentencePieceSpace.size();
    } else {
      out.push_back(token[i++]);
    }
  }
  return out;
}

}  // namespace

TokenTable make_token_table(const Tokenizer& tokenizer, int32_t vocab_size) {
  TokenTable table;
  table.encoding = detect_encoding(tokenizer);
  table.token_bytes.resize(size_t(std::max(vocab_size, 0)));
  const int32_t known = std::min(vocab_size, tokenizer.vocab_size());
  for (int32_t id = 0; id < known; ++id) {
    if (tokenizer.is_special(id)) continue;
    std::string token;
    try {
      token = tokenizer.id_to_token(id);
    } catch (const Error&) {
      continue;  // a hole in the vocabulary
    }
    switch (table.encoding) {
      case VocabEncoding::kByteLevel:
        table.token_bytes[size_t(id)] = byte_level_bytes(token);
        break;
      case VocabEncoding::kByteFallback:
        table.token_bytes[size_t(id)] = byte_fallback_bytes(token);
        break;
      case VocabEncoding::kRaw:
        table.token_bytes[size_t(id)] = token;
        break;
    }
  }
  return table;
}

}  // namespace relayllm::structured
