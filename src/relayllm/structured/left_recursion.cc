#include "relayllm/structured/left_recursion.h"

#include <fmt/format.h>
#include <xgrammar/xgrammar.h>

#include <vector>

// xgrammar's grammar representation (rules and their expressions); the public headers only
// print a grammar. Its sources come with the pinned version (cmake/xgrammar.cmake).
#include "grammar_data_structure.h"
#include "relayllm/structured/constraint_spec.h"

namespace relayllm::structured {
namespace {

using Impl = xgrammar::Grammar::Impl;
using ExprType = Impl::RuleExprType;

class LeftRecursionCheck {
 public:
  LeftRecursionCheck(const Impl& g, const std::string& field)
      : g_(g), field_(field), nullable_(g.NumRules(), false) {}

  void run() {
    compute_nullable();
    const size_t n = g_.NumRules();
    starts_.resize(n);
    for (size_t r = 0; r < n; ++r) collect_starts(g_.GetRule(int32_t(r)).body_expr_id, starts_[r]);
    // Depth-first search over "rule r can start with rule s" edges: a back edge is left
    // recursion; the longest path is the matcher's recursion depth.
    state_.assign(n, kUnseen);
    depth_.assign(n, 0);
    for (size_t r = 0; r < n; ++r)
      if (state_[r] == kUnseen) visit(int32_t(r));
  }

 private:
  enum State : uint8_t { kUnseen, kOpen, kDone };

  bool expr_nullable(int32_t id) const {
    const Impl::RuleExpr e = g_.GetRuleExpr(id);
    switch (e.type) {
      case ExprType::kByteString:
        return e.size() == 0;
      case ExprType::kCharacterClass:
        return false;
      case ExprType::kCharacterClassStar:
      case ExprType::kEmptyStr:
      case ExprType::kTagDispatch:  // may stop before any tag
        return true;
      case ExprType::kRuleRef:
        return nullable_[size_t(e[0])];
      case ExprType::kSequence:
        for (int32_t x : e)
          if (!expr_nullable(x)) return false;
        return true;
      case ExprType::kChoices:
        for (int32_t x : e)
          if (expr_nullable(x)) return true;
        return false;
    }
    return false;
  }

  // Least fixed point: a rule is nullable once its body is with what is known so far.
  void compute_nullable() {
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t r = 0; r < g_.NumRules(); ++r) {
        if (nullable_[r]) continue;
        if (expr_nullable(g_.GetRule(int32_t(r)).body_expr_id)) nullable_[r] = changed = true;
      }
    }
  }

  // Rules that can be expanded at the start of `id` (before it consumes a byte).
  void collect_starts(int32_t id, std::vector<int32_t>& out) const {
    const Impl::RuleExpr e = g_.GetRuleExpr(id);
    switch (e.type) {
      case ExprType::kRuleRef:
        out.push_back(e[0]);
        return;
      case ExprType::kSequence:
        for (int32_t x : e) {
          collect_starts(x, out);
          if (!expr_nullable(x)) return;
        }
        return;
      case ExprType::kChoices:
        for (int32_t x : e) collect_starts(x, out);
        return;
      default:  // bytes, classes; a tag dispatch's rules start after their tag
        return;
    }
  }

  int visit(int32_t root) {
    // Iterative: the grammar itself may be as deep as the stack this check protects.
    struct Frame {
      int32_t rule;
      size_t next;
    };
    std::vector<Frame> stack{{root, 0}};
    state_[size_t(root)] = kOpen;
    while (!stack.empty()) {
      Frame& f = stack.back();
      const std::vector<int32_t>& next = starts_[size_t(f.rule)];
      if (f.next < next.size()) {
        const int32_t s = next[f.next++];
        if (state_[size_t(s)] == kOpen)
          throw ConstraintError(fmt::format(
              "field '{}': the grammar is left-recursive at rule '{}' (it can reach itself "
              "without matching a character, e.g. `x ::= x \"a\"` or a repetition of something "
              "that can be empty such as (a?)*), which the xgrammar matcher cannot run; "
              "rewrite it without (e.g. (a?)* as a*)",
              field_, g_.GetRule(s).name));
        if (state_[size_t(s)] == kUnseen) {
          state_[size_t(s)] = kOpen;
          stack.push_back({s, 0});
        }
        continue;
      }
      int depth = 0;
      for (int32_t s : next) depth = std::max(depth, depth_[size_t(s)] + 1);
      depth_[size_t(f.rule)] = depth;
      if (depth > kMaxLeftExpansionDepth)
        throw ConstraintError(fmt::format(
            "field '{}': rule '{}' starts a chain of {} rules that can each begin the next, "
            "more than the {} allowed",
            field_, g_.GetRule(f.rule).name, depth, kMaxLeftExpansionDepth));
      state_[size_t(f.rule)] = kDone;
      stack.pop_back();
    }
    return depth_[size_t(root)];
  }

  const Impl& g_;
  const std::string& field_;
  std::vector<bool> nullable_;
  std::vector<std::vector<int32_t>> starts_;
  std::vector<State> state_;
  std::vector<int> depth_;
};

}  // namespace

void check_left_recursion(const xgrammar::Grammar& grammar, const std::string& field) {
  LeftRecursionCheck(*grammar.operator->(), field).run();
}

}  // namespace relayllm::structured
