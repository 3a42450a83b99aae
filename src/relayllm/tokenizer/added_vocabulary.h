// tokenizer.json "added_tokens": tokens cut out of the text before the normalizer and the model
// see it, matched leftmost-longest like the reference implementation.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace relayllm {

class Normalizer;

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

// A piece of input: either plain text or one added token.
struct TextSplit {
  size_t begin = 0, end = 0;  // byte range in the text it was cut from
  std::optional<int32_t> token_id;
};

class AddedVocabulary {
 public:
  AddedVocabulary() = default;
  // `normalizer` (may be null) is applied to the content of tokens flagged "normalized", because
  // those are looked for in normalized text.
  AddedVocabulary(const nlohmann::json& added_tokens, const Normalizer* normalizer,
                  const std::string& where);

  // Cuts `text` at the tokens with normalized == false (normalized == true when `normalized_pass`).
  std::vector<TextSplit> split(std::string_view text, bool normalized_pass) const;
  bool has_normalized_tokens() const { return !normalized_trie_.nodes.empty(); }

  const AddedToken* find_id(int32_t id) const;
  std::optional<int32_t> find_content(std::string_view content) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // Byte trie; each node's `token` is the index in tokens_ of a token ending there, or -1.
  struct Trie {
    struct Node {
      std::unordered_map<unsigned char, int32_t> children;
      int32_t token = -1;
    };
    std::vector<Node> nodes;
    bool first_byte[256] = {};
    void insert(std::string_view key, int32_t token);
    // Index in tokens_ and length of the longest key starting at `pos`, or {-1, 0}.
    std::pair<int32_t, size_t> longest_at(std::string_view text, size_t pos) const;
  };

  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> by_id_;
  std::unordered_map<std::string, int32_t> by_content_;
  Trie raw_trie_, normalized_trie_;
};

}  // namespace relayllm
