#include "relayllm/structured/grammar_matcher.h"

#include <algorithm>

#include "relayllm/structured/compiled_constraint_impl.h"

namespace relayllm::structured {

struct GrammarMatcher::Impl {
  std::shared_ptr<const CompiledConstraint> grammar;  // keeps the compiled grammar alive
  xgrammar::GrammarMatcher matcher;
};

GrammarMatcher::GrammarMatcher(std::shared_ptr<const CompiledConstraint> grammar,
                               int32_t max_rollback_tokens) {
  RELAYLLM_CHECK(grammar != nullptr, "GrammarMatcher: no compiled grammar");
  xgrammar::GrammarMatcher m(grammar->impl().compiled, std::nullopt, false, max_rollback_tokens);
  impl_ = std::make_unique<Impl>(Impl{std::move(grammar), std::move(m)});
}

GrammarMatcher::~GrammarMatcher() = default;
GrammarMatcher::GrammarMatcher(GrammarMatcher&&) noexcept = default;
GrammarMatcher& GrammarMatcher::operator=(GrammarMatcher&&) noexcept = default;

int32_t GrammarMatcher::vocab_size() const { return impl_->grammar->vocab_size(); }

bool GrammarMatcher::fill_next_token_bitmask(std::span<int32_t> mask) {
  const int32_t vocab = vocab_size();
  RELAYLLM_CHECK(mask.size() == bitmask_words(vocab),
                 "token bitmask has {} words, the vocabulary of {} needs {}", mask.size(), vocab,
                 bitmask_words(vocab));
  if (impl_->matcher.IsTerminated()) {
    // Past the end only a stop token can follow (the engine finishes the request first).
    std::fill(mask.begin(), mask.end(), 0);
    for (int32_t id : impl_->matcher.GetStopTokenIds())
      mask[size_t(id) / 32] |= int32_t(1u << (id % 32));
    return true;
  }
  int64_t shape[1] = {int64_t(mask.size())};
  DLTensor tensor{};
  tensor.data = mask.data();
  tensor.device = DLDevice{kDLCPU, 0};
  tensor.ndim = 1;
  tensor.dtype = xgrammar::GetBitmaskDLType();
  tensor.shape = shape;
  tensor.strides = nullptr;
  tensor.byte_offset = 0;
  return impl_->matcher.FillNextTokenBitmask(&tensor, 0);
}

bool GrammarMatcher::accept_token(int32_t token) {
  if (impl_->matcher.IsTerminated()) return false;
  if (token < 0 || token >= vocab_size()) return false;
  try {
    return impl_->matcher.AcceptToken(token);
  } catch (const std::exception&) {
    return false;  // xgrammar throws for special tokens: they are simply not allowed
  }
}

bool GrammarMatcher::accept_string(const std::string& text) {
  if (impl_->matcher.IsTerminated()) return false;
  return impl_->matcher._DebugAcceptString(text);
}

std::string GrammarMatcher::find_jump_forward_string() {
  if (impl_->matcher.IsTerminated()) return {};
  return impl_->matcher.FindJumpForwardString();
}

void GrammarMatcher::rollback(int32_t num_tokens) { impl_->matcher.Rollback(num_tokens); }

bool GrammarMatcher::is_terminated() const { return impl_->matcher.IsTerminated(); }

}  // namespace relayllm::structured
