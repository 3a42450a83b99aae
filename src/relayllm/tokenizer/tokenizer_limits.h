// Bounds on what a tokenizer file may hold, so a hostile one is refused with one line
// instead of allocating gigabytes or recursing without end.
#pragma once

#include <cstdint>
#include <string>

#include "relayllm/common/error.h"

namespace relayllm {

// Token ids above this are refused: no vocabulary comes near 16M entries, and the bound keeps
// vocab_size (max id + 1) and every id table far from int32 overflow and huge allocations.
constexpr int64_t kMaxTokenId = (int64_t(1) << 24) - 1;

// Sequence components (normalizer, pre_tokenizer, decoder, post_processor) are built
// recursively; real files nest them one or two levels, a hostile one thousands.
constexpr int kMaxSequenceNesting = 16;

inline void check_sequence_nesting(int depth, const std::string& where) {
  if (depth > kMaxSequenceNesting)
    fail("{}: Sequence nested deeper than {} levels", where, kMaxSequenceNesting);
}

}  // namespace relayllm
