// One request's position in its grammar: which tokens may come next (a bitmask over the
// vocabulary), accepting the sampled token, and whether the grammar has ended. Owned by the
// request's Sequence and used by the engine thread only (the mask of a step may be filled on
// a worker thread while the forward pass runs; never two calls at once).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "relayllm/structured/grammar_compiler.h"

namespace relayllm::structured {

// Words of a token bitmask: bit (id % 32) of word (id / 32) is set when id is allowed.
inline size_t bitmask_words(int32_t vocab_size) { return (size_t(vocab_size) + 31) / 32; }
inline bool bitmask_allows(std::span<const int32_t> mask, int32_t id) {
  return (uint32_t(mask[size_t(id) / 32]) >> (id % 32)) & 1u;
}

class GrammarMatcher {
 public:
  // `max_rollback_tokens`: how many accepted tokens rollback() may undo (0: none kept).
  explicit GrammarMatcher(std::shared_ptr<const CompiledConstraint> grammar,
                          int32_t max_rollback_tokens = 0);
  ~GrammarMatcher();
  GrammarMatcher(GrammarMatcher&&) noexcept;
  GrammarMatcher& operator=(GrammarMatcher&&) noexcept;

  // Writes the allowed next tokens into `mask` (bitmask_words(vocab_size) words). Returns
  // false when every token is allowed (the mask is then all ones anyway). Once terminated,
  // only the stop tokens are allowed.
  bool fill_next_token_bitmask(std::span<int32_t> mask);
  // Advances over `token`; false when the grammar does not allow it (state unchanged).
  bool accept_token(int32_t token);
  // Advances over text (jump-forward, tests); false when not allowed.
  bool accept_string(const std::string& text);
  // The longest text every continuation must start with ("" when there is a choice).
  std::string find_jump_forward_string();
  void rollback(int32_t num_tokens);
  // The grammar is complete and a stop token was accepted.
  bool is_terminated() const;
  int32_t vocab_size() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace relayllm::structured
