// The parsed form of a template. Immutable once built, so many threads may
// render one template at the same time.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "relayllm/chat/jinja_value.h"

namespace relayllm::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class BinaryOp : uint8_t {
  kAdd,
  kSub,
  kMul,
  kDiv,
  kFloorDiv,
  kMod,
  kPow,
  kConcat,
  kEq,
  kNe,
  kLt,
  kLe,
  kGt,
  kGe,
  kIn,
  kNotIn,
  kAnd,
  kOr,
};

struct Expr {
  enum class Kind : uint8_t {
    kLiteral,    // literal
    kName,       // name
    kList,       // args
    kTuple,      // args
    kDict,       // keys[i] -> args[i]
    kGetAttr,    // args[0] . name
    kGetItem,    // args[0] [ args[1] ]
    kSlice,      // args[0] [ args[1] : args[2] : args[3] ], missing parts are null
    kCall,       // args[0] ( args[1..], kwargs )
    kFilter,     // args[0] | name ( args[1..], kwargs )
    kTest,       // args[0] is [not] name ( args[1..] )
    kNot,        // not args[0]
    kNeg,        // - args[0]
    kPos,        // + args[0]
    kBinary,     // args[0] op args[1]
    kCompare,    // args[0] ops[0] args[1] ops[1] args[2] ..., chained as in Python
    kCondition,  // args[0] if args[1] else args[2] (args[2] may be null)
  };
  Kind kind;
  size_t offset = 0;
  std::string name;
  Value literal;
  BinaryOp op = BinaryOp::kAdd;
  bool negated = false;
  std::vector<ExprPtr> args;
  std::vector<BinaryOp> ops;
  std::vector<ExprPtr> keys;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  enum class Kind : uint8_t {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // conditions[i] -> bodies[i]; bodies.back() is the else branch when longer
    kFor,       // for targets in expr [if filter]: body else else_body
    kSet,       // set targets (or target_object.name) = expr
    kSetBlock,  // set targets[0] %}body{% endset
    kMacro,     // macro name(params) body
    kBreak,
    kContinue,
    kFilterBlock,  // filter name(args) body
    kScope,        // body in its own scope (also `generation` blocks)
  };
  Kind kind;
  size_t offset = 0;
  std::string text;
  std::string name;
  ExprPtr expr;
  ExprPtr filter;
  ExprPtr target_object;  // `set ns.attr = ...`
  std::vector<std::string> targets;
  std::vector<ExprPtr> conditions;
  std::vector<Body> bodies;
  Body body;
  Body else_body;
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro parameters, defaults may be null
};

}  // namespace relayllm::jinja
