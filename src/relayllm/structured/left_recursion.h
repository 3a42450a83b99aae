// A check run on every grammar before xgrammar compiles it: xgrammar's matcher expands the
// rules that can start a match by recursion, and a rule that can reach itself without
// consuming a byte (left recursion: `root ::= root "a"`, `x ::= "" | x`, and the repetition
// of something that can be empty, `(a?)*`, which its parser turns into such a rule) makes that
// recursion endless: the process dies of a stack overflow. So such grammars are refused with
// a message naming the rule, as is a chain of rule expansions too long for the stack.
#pragma once

#include <string>

namespace xgrammar {
class Grammar;
}

namespace relayllm::structured {

// Longest chain of rules that can start one another (expanded recursively by the matcher).
inline constexpr int kMaxLeftExpansionDepth = 512;

// Throws ConstraintError naming `field` and the offending rule.
void check_left_recursion(const xgrammar::Grammar& grammar, const std::string& field);

}  // namespace relayllm::structured
