#include "relayllm/chat/jinja_parser.h"

#include <algorithm>
#include <initializer_list>

#include "relayllm/common/error.h"

namespace relayllm::jinja {
namespace {

using TK = Token::Kind;

// Templates come from model files, which may be hostile. Parsing and evaluation recurse once
// per level of the syntax tree, so its depth is bounded two ways: statements and parenthesised
// expressions nest at most kMaxNesting deep, and one tag ({{ ... }} or {% ... %}) holds at
// most kMaxTagTokens tokens (a chain like 1+1+1+... deepens the tree without recursing in
// the parser). Real templates stay far below both.
constexpr int kMaxNesting = 64;
constexpr size_t kMaxTagTokens = 1000;

std::string describe_token(const Token& t) {
  switch (t.kind) {
    case TK::kText:
      return "template text";
    case TK::kVarBegin:
      return "'{{'";
    case TK::kVarEnd:
      return "'}}'";
    case TK::kBlockBegin:
      return "'{%'";
    case TK::kBlockEnd:
      return "'%}'";
    case TK::kName:
      return "'" + t.text + "'";
    case TK::kString:
      return "a string";
    case TK::kInteger:
    case TK::kFloat:
      return "a number";
    case TK::kOperator:
      return "'" + t.text + "'";
    case TK::kEof:
      return "end of template";
  }
  return "?";
}

class Parser {
 public:
  Parser(std::string_view source, std::vector<Token> tokens)
      : positions_(source), tokens_(std::move(tokens)) {}

  Body parse() {
    check_tag_sizes();
    std::string end;
    Body body = parse_body({}, end, 0);
    return body;
  }

 private:
  const Token& peek(size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  const Token& next() {
    const Token& t = tokens_[pos_];
    if (pos_ + 1 < tokens_.size()) ++pos_;
    return t;
  }
  bool at_op(std::string_view op, size_t ahead = 0) const {
    return peek(ahead).kind == TK::kOperator && peek(ahead).text == op;
  }
  bool at_name(std::string_view name, size_t ahead = 0) const {
    return peek(ahead).kind == TK::kName && peek(ahead).text == name;
  }

  void check_tag_sizes() const {
    size_t in_tag = 0, opened_at = 0;
    for (const Token& t : tokens_) {
      if (t.kind == TK::kVarBegin || t.kind == TK::kBlockBegin) {
        in_tag = 1;
        opened_at = t.offset;
      } else if (t.kind == TK::kVarEnd || t.kind == TK::kBlockEnd) {
        in_tag = 0;
      } else if (in_tag && ++in_tag > kMaxTagTokens) {
        error_at(opened_at, fmt::format("a tag of more than {} tokens", kMaxTagTokens));
      }
    }
  }

  // Counts one level of recursion for as long as it lives.
  class Nested {
   public:
    Nested(Parser& parser, size_t offset) : parser_(parser) {
      if (++parser_.depth_ > kMaxNesting)
        parser_.error_at(offset, fmt::format("nesting deeper than {} levels", kMaxNesting));
    }
    ~Nested() { --parser_.depth_; }
    Nested(const Nested&) = delete;
    Nested& operator=(const Nested&) = delete;

   private:
    Parser& parser_;
  };

  [[noreturn]] void error_at(size_t offset, const std::string& what) const {
    fail("chat template syntax error at {}: {}", positions_.describe(offset), what);
  }
  [[noreturn]] void expected(const std::string& what) const {
    error_at(peek().offset, fmt::format("expected {}, got {}", what, describe_token(peek())));
  }

  void expect_op(std::string_view op) {
    if (!at_op(op)) expected(fmt::format("'{}'", op));
    next();
  }
  void expect_block_end() {
    if (peek().kind != TK::kBlockEnd) expected("'%}'");
    next();
  }
  std::string expect_name(const char* what) {
    if (peek().kind != TK::kName) expected(what);
    return next().text;
  }

  static ExprPtr make(Expr::Kind kind, size_t offset) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->offset = offset;
    return e;
  }
  static StmtPtr make_stmt(Stmt::Kind kind, size_t offset) {
    auto s = std::make_unique<Stmt>();
    s->kind = kind;
    s->offset = offset;
    return s;
  }

  // Parses statements until a `{% name %}` with name in `ends`; that name is stored in
  // `end` and the parser is left just after it.
  Body parse_body(std::initializer_list<const char*> ends, std::string& end, size_t opened_at) {
    Nested nested(*this, opened_at);
    Body body;
    while (true) {
      const Token& t = peek();
      switch (t.kind) {
        case TK::kText: {
          auto s = make_stmt(Stmt::Kind::kText, t.offset);
          s->text = t.text;
          next();
          body.push_back(std::move(s));
          break;
        }
        case TK::kVarBegin: {
          size_t offset = next().offset;
          auto s = make_stmt(Stmt::Kind::kOutput, offset);
          s->expr = parse_tuple(true);
          if (peek().kind != TK::kVarEnd) expected("'}}'");
          next();
          body.push_back(std::move(s));
          break;
        }
        case TK::kBlockBegin: {
          next();
          if (peek().kind != TK::kName) expected("a tag name");
          const std::string& name = peek().text;
          for (const char* e : ends) {
            if (name == e) {
              end = name;
              next();
              return body;
            }
          }
          body.push_back(parse_statement());
          break;
        }
        case TK::kEof: {
          if (ends.size() == 0) return body;
          std::string names;
          for (const char* e : ends) names += std::string(names.empty() ? "'" : " or '") + e + "'";
          error_at(
              opened_at,
              fmt::format(
                  "tag opened here is never closed: expected {} before the end of the template",
                  names));
        }
        default:
          expected("text or a tag");
      }
    }
  }

  StmtPtr parse_statement() {
    const Token& t = next();
    const std::string name = t.text;
    size_t offset = t.offset;
    std::string end;
    if (name == "if") {
      auto s = make_stmt(Stmt::Kind::kIf, offset);
      s->conditions.push_back(parse_expression(true));
      expect_block_end();
      while (true) {
        s->bodies.push_back(parse_body({"elif", "else", "endif"}, end, offset));
        if (end == "elif") {
          s->conditions.push_back(parse_expression(true));
          expect_block_end();
        } else if (end == "else") {
          expect_block_end();
          s->bodies.push_back(parse_body({"endif"}, end, offset));
          expect_block_end();
          return s;
        } else {
          expect_block_end();
          return s;
        }
      }
    }
    if (name == "for") {
      auto s = make_stmt(Stmt::Kind::kFor, offset);
      s->targets = parse_targets();
      if (!at_name("in")) expected("'in'");
      next();
      s->expr = parse_tuple(false);
      if (at_name("if")) {
        next();
        s->filter = parse_expression(true);
      }
      if (at_name("recursive")) error_at(peek().offset, "recursive loops are not supported");
      expect_block_end();
      s->body = parse_body({"else", "endfor"}, end, offset);
      if (end == "else") {
        expect_block_end();
        s->else_body = parse_body({"endfor"}, end, offset);
      }
      expect_block_end();
      return s;
    }
    if (name == "set") {
      size_t target_offset = peek().offset;
      std::string first = expect_name("a variable name");
      if (at_op(".")) {
        next();
        auto s = make_stmt(Stmt::Kind::kSet, offset);
        s->target_object = make(Expr::Kind::kName, target_offset);
        s->target_object->name = first;
        s->name = expect_name("an attribute name");
        expect_op("=");
        s->expr = parse_tuple(true);
        expect_block_end();
        return s;
      }
      std::vector<std::string> targets{first};
      while (at_op(",")) {
        next();
        targets.push_back(expect_name("a variable name"));
      }
      if (peek().kind == TK::kBlockEnd && targets.size() == 1) {
        next();
        auto s = make_stmt(Stmt::Kind::kSetBlock, offset);
        s->targets = std::move(targets);
        s->body = parse_body({"endset"}, end, offset);
        expect_block_end();
        return s;
      }
      auto s = make_stmt(Stmt::Kind::kSet, offset);
      s->targets = std::move(targets);
      expect_op("=");
      s->expr = parse_tuple(true);
      expect_block_end();
      return s;
    }
    if (name == "macro") {
      auto s = make_stmt(Stmt::Kind::kMacro, offset);
      s->name = expect_name("a macro name");
      expect_op("(");
      while (!at_op(")")) {
        std::string param = expect_name("a parameter name");
        ExprPtr default_value;
        if (at_op("=")) {
          next();
          default_value = parse_expression(true);
        }
        s->params.emplace_back(std::move(param), std::move(default_value));
        if (!at_op(",")) break;
        next();
      }
      expect_op(")");
      expect_block_end();
      s->body = parse_body({"endmacro"}, end, offset);
      expect_block_end();
      return s;
    }
    if (name == "break" || name == "continue") {
      expect_block_end();
      return make_stmt(name == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue, offset);
    }
    if (name == "filter") {
      auto s = make_stmt(Stmt::Kind::kFilterBlock, offset);
      // The filter is applied to a placeholder; the interpreter feeds it the body's output.
      ExprPtr placeholder = make(Expr::Kind::kLiteral, offset);
      s->expr = parse_filter(std::move(placeholder), offset);
      while (at_op("|")) s->expr = parse_filter(std::move(s->expr), peek().offset);
      expect_block_end();
      s->body = parse_body({"endfilter"}, end, offset);
      expect_block_end();
      return s;
    }
    if (name == "generation") {
      auto s = make_stmt(Stmt::Kind::kScope, offset);
      expect_block_end();
      s->body = parse_body({"endgeneration"}, end, offset);
      expect_block_end();
      return s;
    }
    error_at(offset, fmt::format("unknown tag '{}'", name));
  }

  std::vector<std::string> parse_targets() {
    bool parens = at_op("(");
    if (parens) next();
    std::vector<std::string> targets{expect_name("a loop variable name")};
    while (at_op(",")) {
      next();
      if (parens && at_op(")")) break;
      targets.push_back(expect_name("a loop variable name"));
    }
    if (parens) expect_op(")");
    return targets;
  }

  // An expression, or several separated by commas (a tuple, as in `{{ a, b }}`).
  ExprPtr parse_tuple(bool with_condexpr) {
    size_t offset = peek().offset;
    ExprPtr first = parse_expression(with_condexpr);
    if (!at_op(",")) return first;
    auto tuple = make(Expr::Kind::kTuple, offset);
    tuple->args.push_back(std::move(first));
    while (at_op(",")) {
      next();
      if (peek().kind == TK::kBlockEnd || peek().kind == TK::kVarEnd) break;
      tuple->args.push_back(parse_expression(with_condexpr));
    }
    return tuple;
  }

  ExprPtr parse_expression(bool with_condexpr) {
    Nested nested(*this, peek().offset);
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  ExprPtr parse_condexpr() {
    ExprPtr value = parse_or();
    while (at_name("if")) {
      size_t offset = next().offset;
      auto cond = make(Expr::Kind::kCondition, offset);
      cond->args.push_back(std::move(value));
      cond->args.push_back(parse_or());
      if (at_name("else")) {
        next();
        Nested nested(*this, offset);
        cond->args.push_back(parse_condexpr());
      } else {
        cond->args.push_back(nullptr);
      }
      value = std::move(cond);
    }
    return value;
  }

  ExprPtr binary(ExprPtr left, BinaryOp op, ExprPtr right, size_t offset) {
    auto e = make(Expr::Kind::kBinary, offset);
    e->op = op;
    e->args.push_back(std::move(left));
    e->args.push_back(std::move(right));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (at_name("or")) {
      size_t offset = next().offset;
      left = binary(std::move(left), BinaryOp::kOr, parse_and(), offset);
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (at_name("and")) {
      size_t offset = next().offset;
      left = binary(std::move(left), BinaryOp::kAnd, parse_not(), offset);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (at_name("not")) {
      size_t offset = next().offset;
      auto e = make(Expr::Kind::kNot, offset);
      Nested nested(*this, offset);
      e->args.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    ExprPtr left = parse_math1();
    ExprPtr chain;
    while (true) {
      size_t offset = peek().offset;
      BinaryOp op;
      if (peek().kind == TK::kOperator && peek().text == "==") {
        op = BinaryOp::kEq;
      } else if (at_op("!=")) {
        op = BinaryOp::kNe;
      } else if (at_op("<")) {
        op = BinaryOp::kLt;
      } else if (at_op("<=")) {
        op = BinaryOp::kLe;
      } else if (at_op(">")) {
        op = BinaryOp::kGt;
      } else if (at_op(">=")) {
        op = BinaryOp::kGe;
      } else if (at_name("in")) {
        op = BinaryOp::kIn;
      } else if (at_name("not") && at_name("in", 1)) {
        next();
        op = BinaryOp::kNotIn;
      } else {
        return chain ? std::move(chain) : std::move(left);
      }
      next();
      if (!chain) {
        chain = make(Expr::Kind::kCompare, offset);
        chain->args.push_back(std::move(left));
      }
      chain->ops.push_back(op);
      chain->args.push_back(parse_math1());
    }
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (at_op("+") || at_op("-")) {
      const Token& t = next();
      BinaryOp op = t.text == "+" ? BinaryOp::kAdd : BinaryOp::kSub;
      left = binary(std::move(left), op, parse_concat(), t.offset);
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (at_op("~")) {
      size_t offset = next().offset;
      left = binary(std::move(left), BinaryOp::kConcat, parse_math2(), offset);
    }
    return left;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (at_op("*") || at_op("/") || at_op("//") || at_op("%")) {
      const Token& t = next();
      BinaryOp op = t.text == "*"    ? BinaryOp::kMul
                    : t.text == "/"  ? BinaryOp::kDiv
                    : t.text == "//" ? BinaryOp::kFloorDiv
                                     : BinaryOp::kMod;
      left = binary(std::move(left), op, parse_pow(), t.offset);
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (at_op("**")) {
      size_t offset = next().offset;
      left = binary(std::move(left), BinaryOp::kPow, parse_unary(true), offset);
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    ExprPtr node;
    if (at_op("-") || at_op("+")) {
      const Token& t = next();
      node = make(t.text == "-" ? Expr::Kind::kNeg : Expr::Kind::kPos, t.offset);
      Nested nested(*this, t.offset);
      node->args.push_back(parse_unary(false));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token& t = peek();
    size_t offset = t.offset;
    switch (t.kind) {
      case TK::kName: {
        next();
        auto e = make(Expr::Kind::kLiteral, offset);
        if (t.text == "true" || t.text == "True") {
          e->literal = Value(true);
        } else if (t.text == "false" || t.text == "False") {
          e->literal = Value(false);
        } else if (t.text == "none" || t.text == "None") {
          e->literal = Value::none();
        } else {
          e->kind = Expr::Kind::kName;
          e->name = t.text;
        }
        return e;
      }
      case TK::kString: {
        std::string value;
        while (peek().kind == TK::kString) value += next().text;  // adjacent literals join
        auto e = make(Expr::Kind::kLiteral, offset);
        e->literal = Value(std::move(value));
        return e;
      }
      case TK::kInteger: {
        next();
        auto e = make(Expr::Kind::kLiteral, offset);
        try {
          e->literal = Value(static_cast<int64_t>(std::stoll(t.text)));
        } catch (const std::exception&) {
          error_at(offset, fmt::format("integer literal {} is out of range", t.text));
        }
        return e;
      }
      case TK::kFloat: {
        next();
        auto e = make(Expr::Kind::kLiteral, offset);
        try {
          e->literal = Value(std::stod(t.text));
        } catch (const std::exception&) {  // 1e999: beyond a double
          error_at(offset, fmt::format("float literal {} is out of range", t.text));
        }
        return e;
      }
      case TK::kOperator:
        if (t.text == "(") {
          next();
          if (at_op(")")) {
            next();
            return make(Expr::Kind::kTuple, offset);
          }
          ExprPtr inner = parse_expression(true);
          if (at_op(",")) {
            auto tuple = make(Expr::Kind::kTuple, offset);
            tuple->args.push_back(std::move(inner));
            while (at_op(",")) {
              next();
              if (at_op(")")) break;
              tuple->args.push_back(parse_expression(true));
            }
            inner = std::move(tuple);
          }
          expect_op(")");
          return inner;
        }
        if (t.text == "[") {
          next();
          auto list = make(Expr::Kind::kList, offset);
          while (!at_op("]")) {
            list->args.push_back(parse_expression(true));
            if (!at_op(",")) break;
            next();
          }
          expect_op("]");
          return list;
        }
        if (t.text == "{") {
          next();
          auto dict = make(Expr::Kind::kDict, offset);
          while (!at_op("}")) {
            dict->keys.push_back(parse_expression(true));
            expect_op(":");
            dict->args.push_back(parse_expression(true));
            if (!at_op(",")) break;
            next();
          }
          expect_op("}");
          return dict;
        }
        break;
      default:
        break;
    }
    expected("an expression");
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      size_t offset = peek().offset;
      if (at_op(".")) {
        next();
        if (peek().kind == TK::kInteger) {
          auto item = make(Expr::Kind::kGetItem, offset);
          auto index = make(Expr::Kind::kLiteral, peek().offset);
          index->literal = Value(static_cast<int64_t>(std::stoll(next().text)));
          item->args.push_back(std::move(node));
          item->args.push_back(std::move(index));
          node = std::move(item);
          continue;
        }
        auto attr = make(Expr::Kind::kGetAttr, offset);
        attr->name = expect_name("an attribute name");
        attr->args.push_back(std::move(node));
        node = std::move(attr);
      } else if (at_op("[")) {
        next();
        node = parse_subscript(std::move(node), offset);
      } else if (at_op("(")) {
        node = parse_call(std::move(node), offset);
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr object, size_t offset) {
    ExprPtr start;
    if (!at_op(":")) {
      start = parse_expression(true);
      if (!at_op(":")) {
        expect_op("]");
        auto item = make(Expr::Kind::kGetItem, offset);
        item->args.push_back(std::move(object));
        item->args.push_back(std::move(start));
        return item;
      }
    }
    next();  // ':'
    ExprPtr stop, step;
    if (!at_op("]") && !at_op(":")) stop = parse_expression(true);
    if (at_op(":")) {
      next();
      if (!at_op("]")) step = parse_expression(true);
    }
    expect_op("]");
    auto slice = make(Expr::Kind::kSlice, offset);
    slice->args.push_back(std::move(object));
    slice->args.push_back(std::move(start));
    slice->args.push_back(std::move(stop));
    slice->args.push_back(std::move(step));
    return slice;
  }

  void parse_call_args(Expr& call) {
    expect_op("(");
    while (!at_op(")")) {
      if (peek().kind == TK::kName && at_op("=", 1)) {
        std::string key = next().text;
        next();
        call.kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!call.kwargs.empty()) expected("a keyword argument (positional arguments come first)");
        call.args.push_back(parse_expression(true));
      }
      if (!at_op(",")) break;
      next();
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr callee, size_t offset) {
    auto call = make(Expr::Kind::kCall, offset);
    call->args.push_back(std::move(callee));
    parse_call_args(*call);
    return call;
  }

  std::string parse_dotted_name(const char* what) {
    std::string name = expect_name(what);
    while (at_op(".") && peek(1).kind == TK::kName) {
      next();
      name += "." + next().text;
    }
    return name;
  }

  ExprPtr parse_filter(ExprPtr value, size_t offset) {
    if (at_op("|")) next();
    auto filter = make(Expr::Kind::kFilter, offset);
    filter->name = parse_dotted_name("a filter name");
    filter->args.push_back(std::move(value));
    if (at_op("(")) parse_call_args(*filter);
    return filter;
  }

  ExprPtr parse_test(ExprPtr value) {
    size_t offset = next().offset;  // 'is'
    auto test = make(Expr::Kind::kTest, offset);
    if (at_name("not")) {
      next();
      test->negated = true;
    }
    test->name = parse_dotted_name("a test name");
    test->args.push_back(std::move(value));
    const Token& t = peek();
    if (at_op("(")) {
      parse_call_args(*test);
    } else if ((t.kind == TK::kName || t.kind == TK::kString || t.kind == TK::kInteger ||
                t.kind == TK::kFloat || at_op("[") || at_op("{")) &&
               !at_name("else") && !at_name("or") && !at_name("and")) {
      // jinja2 allows one argument without parentheses: `x is sameas false`.
      if (at_name("is")) error_at(t.offset, "tests cannot be chained with 'is'");
      test->args.push_back(parse_postfix(parse_primary()));
    }
    return test;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      size_t offset = peek().offset;
      if (at_op("|")) {
        node = parse_filter(std::move(node), offset);
      } else if (at_name("is")) {
        node = parse_test(std::move(node));
      } else if (at_op("(")) {
        node = parse_call(std::move(node), offset);
      } else {
        return node;
      }
    }
  }

  SourcePositions positions_;
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;  // levels of recursion open (Nested)
};

}  // namespace

Body parse_template(std::string_view source) {
  return Parser(source, tokenize_template(source)).parse();
}

}  // namespace relayllm::jinja
