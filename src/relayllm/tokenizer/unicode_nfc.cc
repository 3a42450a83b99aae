#include "relayllm/tokenizer/unicode_nfc.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "relayllm/common/utf8.h"
#include "relayllm/tokenizer/unicode_tables.h"

namespace relayllm {
namespace {

namespace ud = unicode_data;

// Hangul syllables decompose and compose arithmetically (Unicode 3.12), not through tables.
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28;
constexpr uint32_t kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

uint8_t combining_class(uint32_t cp) {
  if (cp < 0x300) return 0;
  const auto* begin = ud::kCombiningClasses;
  const auto* end = begin + ud::kCombiningClassCount;
  const auto* it = std::lower_bound(
      begin, end, cp,
      [](const ud::CombiningClassEntry& e, uint32_t c) { return e.code_point < c; });
  return it != end && it->code_point == cp ? it->combining_class : 0;
}

void decompose_into(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (cp >= 0xC0) {
    const auto* begin = ud::kDecompositions;
    const auto* end = begin + ud::kDecompositionCount;
    const auto* it = std::lower_bound(
        begin, end, cp,
        [](const ud::DecompositionEntry& e, uint32_t c) { return e.code_point < c; });
    if (it != end && it->code_point == cp) {
      out.insert(out.end(), ud::kDecompositionPool + it->offset,
                 ud::kDecompositionPool + it->offset + it->length);
      return;
    }
  }
  out.push_back(cp);
}

// Returns 0 when the pair has no primary composite.
uint32_t compose_pair(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount) {
    return a + (b - kTBase);
  }
  const auto* begin = ud::kCompositions;
  const auto* end = begin + ud::kCompositionCount;
  const auto* it =
      std::lower_bound(begin, end, std::pair{a, b},
                       [](const ud::CompositionEntry& e, std::pair<uint32_t, uint32_t> k) {
                         return e.first != k.first ? e.first < k.first : e.second < k.second;
                       });
  return it != end && it->first == a && it->second == b ? it->composite : 0;
}

std::vector<uint32_t> canonical_decomposition(std::string_view text) {
  std::vector<uint32_t> out;
  out.reserve(text.size());
  for (uint32_t cp : utf8::decode(text)) decompose_into(cp, out);
  // Canonical ordering: stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < out.size();) {
    if (combining_class(out[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < out.size() && combining_class(out[j]) != 0) ++j;
    std::stable_sort(out.begin() + i, out.begin() + j, [](uint32_t x, uint32_t y) {
      return combining_class(x) < combining_class(y);
    });
    i = j;
  }
  return out;
}

// Below U+0300 every character is its own NFC and NFD form except Latin-1 letters with
// diacritics, so pure ASCII (the common case) can skip the work entirely.
bool is_ascii(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

}  // namespace

std::string to_nfd(std::string_view text) {
  if (is_ascii(text)) return std::string(text);
  return utf8::encode(canonical_decomposition(text));
}

std::string to_nfc(std::string_view text) {
  if (is_ascii(text)) return std::string(text);
  std::vector<uint32_t> cps = canonical_decomposition(text);
  if (cps.empty()) return {};
  // Canonical composition (Unicode 3.11): each character joins the last starter unless blocked.
  std::vector<uint32_t> out;
  out.reserve(cps.size());
  size_t starter = SIZE_MAX;
  int last_class = -1;
  for (uint32_t cp : cps) {
    int cls = combining_class(cp);
    if (starter != SIZE_MAX) {
      bool blocked = last_class != -1 && (last_class >= cls || last_class == 0);
      if (!blocked) {
        uint32_t composite = compose_pair(out[starter], cp);
        if (composite != 0) {
          out[starter] = composite;
          continue;
        }
      }
    }
    if (cls == 0) {
      starter = out.size();
      last_class = -1;
    } else {
      last_class = cls;
    }
    out.push_back(cp);
  }
  return utf8::encode(out);
}

}  // namespace relayllm
