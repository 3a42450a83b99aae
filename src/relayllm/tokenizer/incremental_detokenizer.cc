#include "relayllm/common/utf8.h"
#include "relayllm/tokenizer/tokenizer.h"

namespace relayllm {
namespace {

// How many prompt ids to decode as context: enough to cover a character split over byte tokens
// (4 bytes) plus the token before it, whose presence stops a leading-space strip.
constexpr size_t kPromptContext = 5;

bool ends_with_replacement(const std::string& s) {
  return s.size() >= utf8::kReplacement.size() &&
         s.compare(s.size() - utf8::kReplacement.size(), utf8::kReplacement.size(),
                   utf8::kReplacement) == 0;
}

}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer,
                                               std::span<const int32_t> prompt_ids,
                                               bool skip_special_tokens)
    : tokenizer_(&tokenizer), skip_special_(skip_special_tokens) {
  size_t context = std::min(prompt_ids.size(), kPromptContext);
  ids_.assign(prompt_ids.end() - long(context), prompt_ids.end());
  prefix_offset_ = 0;
  read_offset_ = ids_.size();
}

std::string IncrementalDetokenizer::advance(bool final) {
  std::span<const int32_t> all(ids_);
  std::string prefix_text =
      tokenizer_->decode(all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_);
  std::string new_text = tokenizer_->decode(all.subspan(prefix_offset_), skip_special_);
  std::string piece;
  if (new_text.compare(0, prefix_text.size(), prefix_text) == 0) {
    piece = new_text.substr(prefix_text.size());
  } else {
    // The new ids changed how the emitted ones decode: byte fallback turns a whole invalid byte run
    // into U+FFFD per byte, including bytes of a character already emitted. What was emitted stays;
    // the new ids are decoded on their own.
    piece = tokenizer_->decode(all.subspan(read_offset_), skip_special_);
  }
  // A trailing U+FFFD means the last bytes do not form a whole character yet.
  if (piece.empty() || (!final && ends_with_replacement(piece))) return {};
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return piece;
}

std::string IncrementalDetokenizer::push(int32_t id) {
  ids_.push_back(id);
  return advance(false);
}

std::string IncrementalDetokenizer::flush() {
  if (read_offset_ == ids_.size()) return {};
  return advance(true);
}

}  // namespace relayllm
