#include "relayllm/tokenizer/added_vocabulary.h"

#include "relayllm/common/json_fields.h"
#include "relayllm/common/utf8.h"
#include "relayllm/tokenizer/normalizer.h"
#include "relayllm/tokenizer/tokenizer_limits.h"

namespace relayllm {

using json_fields::child;
using json_fields::field;
using json_fields::field_or;
namespace {

bool is_word_char(uint32_t cp) {
  // ASCII letters and digits, plus every non-ASCII character except whitespace: an approximation of
  // Unicode alphanumerics, which only matters for tokens flagged single_word.
  if (cp < 0x80)
    return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
  return !utf8::is_whitespace(cp);
}

uint32_t last_code_point(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return utf8::decode(s.substr(i)).front();
}

uint32_t first_code_point(std::string_view s) {
  return utf8::decode(s.substr(0, size_t(utf8::sequence_length(static_cast<unsigned char>(s[0])))))
      .front();
}

}  // namespace

void AddedVocabulary::Trie::insert(std::string_view key, int32_t token) {
  if (key.empty()) return;
  if (nodes.empty()) nodes.emplace_back();
  int32_t node = 0;
  for (char c : key) {
    auto b = static_cast<unsigned char>(c);
    auto it = nodes[size_t(node)].children.find(b);
    if (it == nodes[size_t(node)].children.end()) {
      nodes.emplace_back();
      int32_t child = int32_t(nodes.size() - 1);
      nodes[size_t(node)].children.emplace(b, child);
      node = child;
    } else {
      node = it->second;
    }
  }
  // Two tokens with the same content: the first one listed wins.
  if (nodes[size_t(node)].token < 0) nodes[size_t(node)].token = token;
  first_byte[static_cast<unsigned char>(key[0])] = true;
}

std::pair<int32_t, size_t> AddedVocabulary::Trie::longest_at(std::string_view text,
                                                             size_t pos) const {
  std::pair<int32_t, size_t> best{-1, 0};
  if (nodes.empty() || !first_byte[static_cast<unsigned char>(text[pos])]) return best;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto& children = nodes[size_t(node)].children;
    auto it = children.find(static_cast<unsigned char>(text[i]));
    if (it == children.end()) break;
    node = it->second;
    if (nodes[size_t(node)].token >= 0) best = {nodes[size_t(node)].token, i + 1 - pos};
  }
  return best;
}

AddedVocabulary::AddedVocabulary(const nlohmann::json& added_tokens, const Normalizer* normalizer,
                                 const std::string& where) {
  if (added_tokens.is_null()) return;
  if (!added_tokens.is_array()) fail("{}: must be an array", where);
  for (size_t i = 0; i < added_tokens.size(); ++i) {
    const auto& t = added_tokens[i];
    std::string here = fmt::format("{}[{}]", where, i);
    AddedToken token;
    token.id = field<int32_t>(t, "id", here);
    if (token.id < 0 || token.id > kMaxTokenId)
      fail("{}: field \"id\" = {} is out of range (0..{})", here, token.id, kMaxTokenId);
    token.content = field<std::string>(t, "content", here);
    token.special = field_or<bool>(t, "special", false, here);
    token.single_word = field_or<bool>(t, "single_word", false, here);
    token.lstrip = field_or<bool>(t, "lstrip", false, here);
    token.rstrip = field_or<bool>(t, "rstrip", false, here);
    token.normalized = field_or<bool>(t, "normalized", !token.special, here);
    if (token.content.empty()) fail("{}: empty content", here);
    if (!utf8::is_valid(token.content)) fail("{}: content is not valid UTF-8", here);
    int32_t index = int32_t(tokens_.size());
    if (token.normalized) {
      normalized_trie_.insert(normalizer ? normalizer->normalize(token.content) : token.content,
                              index);
    } else {
      raw_trie_.insert(token.content, index);
    }
    by_id_[token.id] = size_t(index);
    by_content_.emplace(token.content, token.id);
    tokens_.push_back(std::move(token));
  }
}

std::vector<TextSplit> AddedVocabulary::split(std::string_view text, bool normalized_pass) const {
  const Trie& trie = normalized_pass ? normalized_trie_ : raw_trie_;
  std::vector<TextSplit> splits;
  size_t start_offset = 0;  // end of the last emitted piece
  size_t pos = 0;
  while (pos < text.size() && !trie.nodes.empty()) {
    auto [index, length] = trie.longest_at(text, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    size_t begin = pos, end = pos + length;
    pos = end;  // the next search resumes after this match whether or not it is used
    if (begin < start_offset) continue;
    const AddedToken& token = tokens_[size_t(index)];
    if (token.single_word) {
      bool space_before = begin == 0 || !is_word_char(last_code_point(text.substr(0, begin)));
      bool space_after = end == text.size() || !is_word_char(first_code_point(text.substr(end)));
      if (!space_before || !space_after) continue;
    }
    if (token.lstrip) {
      while (begin > start_offset) {
        size_t p = begin - 1;
        while (p > 0 && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80) --p;
        if (!utf8::is_whitespace(utf8::decode(text.substr(p, begin - p)).front())) break;
        begin = p;
      }
    }
    if (token.rstrip) {
      while (end < text.size()) {
        size_t n = size_t(utf8::sequence_length(static_cast<unsigned char>(text[end])));
        if (!utf8::is_whitespace(utf8::decode(text.substr(end, n)).front())) break;
        end += n;
      }
    }
    if (begin > start_offset) splits.push_back({start_offset, begin, std::nullopt});
    splits.push_back({begin, end, token.id});
    start_offset = end;
  }
  if (start_offset < text.size()) splits.push_back({start_offset, text.size(), std::nullopt});
  return splits;
}

const AddedToken* AddedVocabulary::find_id(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int32_t> AddedVocabulary::find_content(std::string_view content) const {
  auto it = by_content_.find(std::string(content));
  if (it == by_content_.end()) return std::nullopt;
  return it->second;
}

}  // namespace relayllm
