#include "relayllm/tokenizer/pre_tokenizer.h"

#include <optional>

#include "relayllm/common/json_fields.h"
#include "relayllm/tokenizer/byte_level.h"
#include "relayllm/tokenizer/regex.h"
#include "relayllm/tokenizer/sequence_parts.h"
#include "relayllm/tokenizer/tokenizer_limits.h"

namespace relayllm {

using json_fields::child;
using json_fields::field;
using json_fields::field_or;
namespace {

// What happens to the matched delimiters when a piece is split (names as in tokenizer.json).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

SplitBehavior parse_behavior(const std::string& name, const std::string& where) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  fail("{}: unknown split behavior \"{}\"", where, name);
}

// Cuts `piece` at the matches of `regex` and appends the parts to `out`.
void split_piece(const TextPiece& piece, const Regex& regex, SplitBehavior behavior, bool invert,
                 std::vector<TextPiece>& out) {
  const std::string& s = piece.text;
  // Alternating ranges covering the whole piece, each flagged as delimiter or not.
  std::vector<std::pair<std::pair<size_t, size_t>, bool>> spans;
  size_t last = 0;
  for (auto [begin, end] : regex.find_all(s)) {
    if (begin > last) spans.push_back({{last, begin}, invert});
    spans.push_back({{begin, end}, !invert});
    last = end;
  }
  if (last < s.size()) spans.push_back({{last, s.size()}, invert});

  std::vector<std::pair<size_t, size_t>> parts;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (auto& [range, is_delim] : spans)
        if (!is_delim) parts.push_back(range);
      break;
    case SplitBehavior::kIsolated:
      for (auto& [range, is_delim] : spans) parts.push_back(range);
      break;
    case SplitBehavior::kContiguous: {
      bool prev_delim = false;
      for (auto& [range, is_delim] : spans) {
        if (is_delim && prev_delim && !parts.empty()) {
          parts.back().second = range.second;
        } else {
          parts.push_back(range);
        }
        prev_delim = is_delim;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool prev_delim = false;
      for (auto& [range, is_delim] : spans) {
        if (is_delim && !prev_delim && !parts.empty()) {
          parts.back().second = range.second;
        } else {
          parts.push_back(range);
        }
        prev_delim = is_delim;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool prev_delim = false;
      for (auto& [range, is_delim] : spans) {
        if (prev_delim && !is_delim && !parts.empty()) {
          parts.back().second = range.second;
        } else {
          parts.push_back(range);
        }
        prev_delim = is_delim;
      }
      break;
    }
  }
  for (auto [begin, end] : parts) {
    if (end > begin)
      out.push_back({s.substr(begin, end - begin), piece.at_text_start && begin == 0});
  }
}

void split_all(std::vector<TextPiece>& pieces, const Regex& regex, SplitBehavior behavior,
               bool invert) {
  std::vector<TextPiece> out;
  out.reserve(pieces.size());
  for (const auto& piece : pieces) split_piece(piece, regex, behavior, invert, out);
  pieces = std::move(out);
}

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    for (const auto& part : parts_) part->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(Regex regex, SplitBehavior behavior, bool invert)
      : regex_(std::move(regex)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    split_all(pieces, regex_, behavior_, invert_);
  }

 private:
  Regex regex_;
  SplitBehavior behavior_;
  bool invert_;
};

// The GPT-2 word pattern ByteLevel uses when use_regex is set.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex, const std::string& where)
      : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_.emplace(kGpt2Pattern, where);
  }
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    if (add_prefix_space_) {
      for (auto& piece : pieces) {
        if (piece.text.empty() || piece.text[0] != ' ') piece.text = " " + piece.text;
      }
    }
    if (regex_) split_all(pieces, *regex_, SplitBehavior::kIsolated, false);
    for (auto& piece : pieces) piece.text = byte_level::encode(piece.text);
  }

 private:
  bool add_prefix_space_;
  std::optional<Regex> regex_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split,
                        const std::string& where)
      : replacement_(std::move(replacement)),
        scheme_(scheme),
        space_(Regex::literal(" ", where)),
        delimiter_(Regex::literal(replacement_, where)),
        split_(split) {}
  void pre_tokenize(std::vector<TextPiece>& pieces) const override {
    for (auto& piece : pieces) {
      piece.text = space_.replace_all(piece.text, replacement_);
      bool starts = piece.text.compare(0, replacement_.size(), replacement_) == 0;
      bool prepend = scheme_ == PrependScheme::kAlways ||
                     (scheme_ == PrependScheme::kFirst && piece.at_text_start);
      if (prepend && !starts) piece.text = replacement_ + piece.text;
    }
    if (split_) split_all(pieces, delimiter_, SplitBehavior::kMergedWithNext, false);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  Regex space_, delimiter_;
  bool split_;
};

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& config,
                                                 const std::string& where, int depth) {
  if (config.is_null()) return nullptr;
  std::string type = field<std::string>(config, "type", where);
  std::string here = where + "." + type;
  if (type == "Sequence") {
    return std::make_unique<SequencePreTokenizer>(sequence_parts<PreTokenizer>(
        config, "pretokenizers", where, here, depth, make_pre_tokenizer));
  }
  if (type == "Split") {
    return std::make_unique<SplitPreTokenizer>(
        pattern_from_json(child(config, "pattern"), here + ".pattern"),
        parse_behavior(field<std::string>(config, "behavior", here), here),
        field_or<bool>(config, "invert", false, here));
  }
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPreTokenizer>(
        field_or<bool>(config, "add_prefix_space", true, here),
        field_or<bool>(config, "use_regex", true, here), here);
  }
  if (type == "Metaspace") {
    std::string replacement = field<std::string>(config, "replacement", here);
    PrependScheme scheme = field_or<bool>(config, "add_prefix_space", true, here)
                               ? PrependScheme::kAlways
                               : PrependScheme::kNever;
    if (config.contains("prepend_scheme")) {
      std::string name = field<std::string>(config, "prepend_scheme", here);
      if (name == "always")
        scheme = PrependScheme::kAlways;
      else if (name == "first")
        scheme = PrependScheme::kFirst;
      else if (name == "never")
        scheme = PrependScheme::kNever;
      else
        fail("{}: unknown prepend_scheme \"{}\"", here, name);
    }
    return std::make_unique<MetaspacePreTokenizer>(
        replacement, scheme, field_or<bool>(config, "split", true, here), here);
  }
  fail(
      "{}: unsupported pre_tokenizer type \"{}\" (supported: Sequence, Split, ByteLevel, "
      "Metaspace)",
      where, type);
}

}  // namespace relayllm
