// `relayllm tokenize`: JSON lines {"text": ...} in, {"ids": [...]} lines out.
#pragma once

#include <iosfwd>

#include "relayllm/tokenizer/tokenizer.h"

namespace relayllm {

// Returns 0 when every line was encoded; on the first line that is not a JSON object with a string
// "text" it writes one error line naming the line number to stderr and returns 2. Blank lines are
// skipped.
int run_tokenize(const Tokenizer& tokenizer, bool add_special_tokens, std::istream& in,
                 std::ostream& out);

}  // namespace relayllm
