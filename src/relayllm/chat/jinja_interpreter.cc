#include "relayllm/chat/jinja_interpreter.h"

#include <cmath>

#include "relayllm/chat/jinja_builtins.h"
#include "relayllm/common/error.h"

namespace relayllm::jinja {
namespace {

// Variables visible at one point. jinja2 gives every loop iteration and every macro call
// a fresh scope; `if` and `set` do not open one.
struct Scope {
  const Scope* parent = nullptr;
  std::vector<std::pair<std::string, Value>> vars;

  const Value* find(std::string_view name) const {
    for (const Scope* s = this; s != nullptr; s = s->parent) {
      for (auto it = s->vars.rbegin(); it != s->vars.rend(); ++it) {
        if (it->first == name) return &it->second;
      }
    }
    return nullptr;
  }
  void set(const std::string& name, Value value) {
    for (auto& [k, v] : vars) {
      if (k == name) {
        v = std::move(value);
        return;
      }
    }
    vars.emplace_back(name, std::move(value));
  }
};

enum class Flow { kNormal, kBreak, kContinue };

constexpr int kMaxCallDepth = 200;
// A template from a model file may be hostile: bound the work and memory of one render.
// Real templates render a conversation in thousands of steps and kilobytes.
constexpr int64_t kMaxSteps = 500'000;               // statements run plus loop iterations
constexpr size_t kMaxValueBytes = size_t(64) << 20;  // a repeated string or list, and the output

// Python's ints do not overflow; ours are int64, so an overflow is an error, never UB.
void check_overflow(bool overflow, const char* symbol) {
  if (overflow) value_error("integer overflow in {}", symbol);
}

[[noreturn]] void undefined_error(const Value& v) { value_error("{}", v.undefined_name()); }

Value arithmetic(BinaryOp op, const Value& a, const Value& b) {
  if (a.is_undefined()) undefined_error(a);
  if (b.is_undefined()) undefined_error(b);
  bool a_num = a.is_number() || a.is_bool();
  bool b_num = b.is_number() || b.is_bool();
  bool both_int = (a.is_int() || a.is_bool()) && (b.is_int() || b.is_bool());
  auto as_i = [](const Value& v) {
    return v.is_int() ? v.as_int() : static_cast<int64_t>(v.as_bool());
  };
  const char* symbol = "?";
  switch (op) {
    case BinaryOp::kAdd:
      symbol = "+";
      if (both_int) {
        int64_t r;
        check_overflow(__builtin_add_overflow(as_i(a), as_i(b), &r), symbol);
        return Value(r);
      }
      if (a_num && b_num) return Value(a.to_double() + b.to_double());
      if (a.is_string() && b.is_string()) return Value(a.as_string() + b.as_string());
      if (a.is_string()) value_error("can only concatenate str (not \"{}\") to str", b.type_name());
      if (a.is_list() && b.is_list()) {
        ValueList out = a.as_list();
        out.insert(out.end(), b.as_list().begin(), b.as_list().end());
        return Value(std::move(out));
      }
      break;
    case BinaryOp::kSub:
      symbol = "-";
      if (both_int) {
        int64_t r;
        check_overflow(__builtin_sub_overflow(as_i(a), as_i(b), &r), symbol);
        return Value(r);
      }
      if (a_num && b_num) return Value(a.to_double() - b.to_double());
      break;
    case BinaryOp::kMul: {
      symbol = "*";
      if (both_int) {
        int64_t r;
        check_overflow(__builtin_mul_overflow(as_i(a), as_i(b), &r), symbol);
        return Value(r);
      }
      if (a_num && b_num) return Value(a.to_double() * b.to_double());
      const Value* seq = a.is_string() || a.is_list()   ? &a
                         : b.is_string() || b.is_list() ? &b
                                                        : nullptr;
      const Value* count = seq == &a ? &b : &a;
      if (seq != nullptr && (count->is_int() || count->is_bool())) {
        int64_t n = std::max<int64_t>(0, as_i(*count));
        const size_t unit =
            seq->is_string() ? seq->as_string().size() : seq->as_list().size() * sizeof(Value);
        if (unit != 0 && uint64_t(n) > kMaxValueBytes / unit)
          value_error("repeating a {} {} times exceeds {} bytes", seq->type_name(), n,
                      kMaxValueBytes);
        if (seq->is_string()) {
          std::string out;
          for (int64_t i = 0; i < n; ++i) out += seq->as_string();
          return Value(std::move(out));
        }
        ValueList out;
        for (int64_t i = 0; i < n; ++i)
          out.insert(out.end(), seq->as_list().begin(), seq->as_list().end());
        return Value(std::move(out));
      }
      break;
    }
    case BinaryOp::kDiv:
      symbol = "/";
      if (a_num && b_num) {
        if (b.to_double() == 0.0) value_error("division by zero");
        return Value(a.to_double() / b.to_double());
      }
      break;
    case BinaryOp::kFloorDiv:
      symbol = "//";
      if (both_int) {
        int64_t x = as_i(a), y = as_i(b);
        if (y == 0) value_error("integer division or modulo by zero");
        if (x == INT64_MIN && y == -1) value_error("integer overflow in {}", symbol);
        int64_t q = x / y;
        if ((x % y != 0) && ((x < 0) != (y < 0))) --q;
        return Value(q);
      }
      if (a_num && b_num) {
        if (b.to_double() == 0.0) value_error("float floor division by zero");
        return Value(std::floor(a.to_double() / b.to_double()));
      }
      break;
    case BinaryOp::kMod:
      symbol = "%";
      if (both_int) {
        int64_t x = as_i(a), y = as_i(b);
        if (y == 0) value_error("integer division or modulo by zero");
        if (y == -1) return Value(int64_t{0});  // x % -1, without INT64_MIN % -1 overflowing
        int64_t r = x % y;
        if (r != 0 && ((r < 0) != (y < 0))) r += y;
        return Value(r);
      }
      if (a_num && b_num) {
        double y = b.to_double();
        if (y == 0.0) value_error("float modulo");
        double r = std::fmod(a.to_double(), y);
        if (r != 0.0 && ((r < 0) != (y < 0))) r += y;
        return Value(r);
      }
      break;
    case BinaryOp::kPow:
      symbol = "**";
      if (both_int && as_i(b) >= 0) {
        // By squaring: 63 steps at most, and any overflow is reported.
        int64_t result = 1, base = as_i(a), exponent = as_i(b);
        while (exponent > 0) {
          if (exponent & 1) check_overflow(__builtin_mul_overflow(result, base, &result), symbol);
          exponent >>= 1;
          if (exponent > 0) check_overflow(__builtin_mul_overflow(base, base, &base), symbol);
        }
        return Value(result);
      }
      if (a_num && b_num) return Value(std::pow(a.to_double(), b.to_double()));
      break;
    default:
      break;
  }
  value_error("unsupported operand type(s) for {}: '{}' and '{}'", symbol, a.type_name(),
              b.type_name());
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kString:
      if (!item.is_string())
        value_error("'in <string>' requires string as left operand, not {}", item.type_name());
      return container.as_string().find(item.as_string()) != std::string::npos;
    case Value::Kind::kList:
      for (const Value& v : container.as_list()) {
        if (values_equal(v, item)) return true;
      }
      return false;
    case Value::Kind::kDict:
      return item.is_string() && container.as_dict().find(item.as_string()) != nullptr;
    case Value::Kind::kUndefined:
      return false;
    default:
      value_error("argument of type '{}' is not iterable", container.type_name());
  }
}

class Renderer {
 public:
  explicit Renderer(const SourcePositions& positions) : positions_(positions) {}

  void run(const Body& body, Scope& root, std::string& out) { exec_body(body, root, out); }

 private:
  [[noreturn]] void error_at(size_t offset, std::string_view what) const {
    fail("chat template error at {}: {}", positions_.describe(offset), what);
  }

  Flow exec_body(const Body& body, Scope& scope, std::string& out) {
    for (const StmtPtr& stmt : body) {
      Flow flow = exec(*stmt, scope, out);
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  void bind_targets(Scope& scope, const std::vector<std::string>& targets, const Value& value,
                    size_t offset) {
    if (targets.size() == 1) {
      scope.set(targets[0], value);
      return;
    }
    ValueList items = value.is_list() ? value.as_list() : ValueList{};
    if (!value.is_list() || items.size() != targets.size()) {
      error_at(offset,
               fmt::format("cannot unpack {} into {} variables", value.repr(), targets.size()));
    }
    for (size_t i = 0; i < targets.size(); ++i) scope.set(targets[i], items[i]);
  }

  void count_step(size_t offset) {
    if (++steps_ > kMaxSteps)
      error_at(offset, fmt::format("the template runs more than {} steps", kMaxSteps));
  }
  void check_output(const std::string& out, size_t offset) const {
    if (out.size() > kMaxValueBytes)
      error_at(offset, fmt::format("the output exceeds {} bytes", kMaxValueBytes));
  }

  Flow exec(const Stmt& s, Scope& scope, std::string& out) {
    count_step(s.offset);
    switch (s.kind) {
      case Stmt::Kind::kText:
        out += s.text;
        check_output(out, s.offset);
        return Flow::kNormal;
      case Stmt::Kind::kOutput: {
        Value v = eval(*s.expr, scope);
        if (v.is_string()) {
          out += v.as_string();
        } else {
          out += v.str();
        }
        check_output(out, s.offset);
        return Flow::kNormal;
      }
      case Stmt::Kind::kIf:
        for (size_t i = 0; i < s.bodies.size(); ++i) {
          if (i >= s.conditions.size() || eval(*s.conditions[i], scope).truthy()) {
            return exec_body(s.bodies[i], scope, out);
          }
        }
        return Flow::kNormal;
      case Stmt::Kind::kFor:
        exec_for(s, scope, out);
        return Flow::kNormal;
      case Stmt::Kind::kSet: {
        Value value = eval(*s.expr, scope);
        if (s.target_object) {
          Value object = eval(*s.target_object, scope);
          if (!object.is_dict() || !object.as_dict().is_namespace) {
            error_at(s.offset,
                     fmt::format("cannot assign attribute '{}' on a non-namespace object", s.name));
          }
          object.as_dict().set(s.name, std::move(value));
        } else {
          bind_targets(scope, s.targets, value, s.offset);
        }
        return Flow::kNormal;
      }
      case Stmt::Kind::kSetBlock: {
        std::string captured;
        exec_body(s.body, scope, captured);
        scope.set(s.targets[0], Value(std::move(captured)));
        return Flow::kNormal;
      }
      case Stmt::Kind::kMacro:
        scope.set(s.name, make_macro(s, scope));
        return Flow::kNormal;
      case Stmt::Kind::kBreak:
        return Flow::kBreak;
      case Stmt::Kind::kContinue:
        return Flow::kContinue;
      case Stmt::Kind::kFilterBlock: {
        std::string captured;
        Scope inner{&scope, {}};
        exec_body(s.body, inner, captured);
        out += apply_filter_chain(*s.expr, Value(std::move(captured)), scope).str();
        return Flow::kNormal;
      }
      case Stmt::Kind::kScope: {
        Scope inner{&scope, {}};
        return exec_body(s.body, inner, out);
      }
    }
    return Flow::kNormal;
  }

  void exec_for(const Stmt& s, Scope& scope, std::string& out) {
    Value iterable = eval(*s.expr, scope);
    ValueList items;
    try {
      items = iterate(iterable, "");
    } catch (const ValueError& e) {
      error_at(s.expr->offset, e.what());
    }
    if (s.filter) {
      ValueList kept;
      for (const Value& item : items) {
        Scope probe{&scope, {}};
        bind_targets(probe, s.targets, item, s.offset);
        if (eval(*s.filter, probe).truthy()) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      Scope inner{&scope, {}};
      exec_body(s.else_body, inner, out);
      return;
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      count_step(s.offset);
      Scope inner{&scope, {}};
      bind_targets(inner, s.targets, items[static_cast<size_t>(i)], s.offset);
      auto loop = std::make_shared<ValueDict>();
      loop->items.reserve(12);
      loop->items.emplace_back("index", Value(i + 1));
      loop->items.emplace_back("index0", Value(i));
      loop->items.emplace_back("revindex", Value(n - i));
      loop->items.emplace_back("revindex0", Value(n - i - 1));
      loop->items.emplace_back("first", Value(i == 0));
      loop->items.emplace_back("last", Value(i == n - 1));
      loop->items.emplace_back("length", Value(n));
      loop->items.emplace_back("depth", Value(1));
      loop->items.emplace_back("depth0", Value(0));
      loop->items.emplace_back("previtem", i > 0
                                               ? items[static_cast<size_t>(i - 1)]
                                               : Value::undefined("'loop.previtem' is undefined"));
      loop->items.emplace_back("nextitem", i + 1 < n
                                               ? items[static_cast<size_t>(i + 1)]
                                               : Value::undefined("'loop.nextitem' is undefined"));
      loop->items.emplace_back(
          "cycle", Value(std::make_shared<const Callable>(Callable{
                       "loop.cycle", [i](const CallArgs& args) {
                         if (args.positional.empty()) value_error("loop.cycle() needs arguments");
                         return args.positional[static_cast<size_t>(i) % args.positional.size()];
                       }})));
      inner.vars.emplace_back("loop", Value(std::move(loop)));
      if (exec_body(s.body, inner, out) == Flow::kBreak) break;
    }
  }

  Value make_macro(const Stmt& s, const Scope& defined_in) {
    const Scope* closure = &defined_in;
    return Value(std::make_shared<const Callable>(
        Callable{s.name, [this, &s, closure](const CallArgs& args) {
                   if (++depth_ > kMaxCallDepth)
                     value_error("macro '{}' nests deeper than {} calls", s.name, kMaxCallDepth);
                   Scope scope{closure, {}};
                   if (args.positional.size() > s.params.size()) {
                     value_error("macro '{}' takes {} arguments, {} given", s.name, s.params.size(),
                                 args.positional.size());
                   }
                   for (size_t i = 0; i < s.params.size(); ++i) {
                     const auto& [param, default_value] = s.params[i];
                     const Value* given = args.get(i, param);
                     if (given != nullptr) {
                       scope.set(param, *given);
                     } else if (default_value) {
                       scope.set(param, eval(*default_value, scope));
                     } else {
                       scope.set(param, Value::undefined(fmt::format("'{}' is undefined", param)));
                     }
                   }
                   for (const auto& [k, v] : args.keyword) {
                     bool known = false;
                     for (const auto& p : s.params) known = known || p.first == k;
                     if (!known) value_error("macro '{}' has no parameter named '{}'", s.name, k);
                   }
                   std::string out;
                   exec_body(s.body, scope, out);
                   --depth_;
                   return Value(std::move(out));
                 }}));
  }

  Value apply_filter_chain(const Expr& filter, Value input, Scope& scope) {
    if (filter.kind != Expr::Kind::kFilter) return input;
    Value inner = apply_filter_chain(*filter.args[0], std::move(input), scope);
    CallArgs args = eval_args(filter, scope, 1);
    try {
      return apply_filter(filter.name, inner, args);
    } catch (const ValueError& e) {
      error_at(filter.offset, e.what());
    }
  }

  CallArgs eval_args(const Expr& e, Scope& scope, size_t first) {
    CallArgs args;
    args.positional.reserve(e.args.size() - first);
    for (size_t i = first; i < e.args.size(); ++i)
      args.positional.push_back(eval(*e.args[i], scope));
    for (const auto& [k, v] : e.kwargs) args.keyword.emplace_back(k, eval(*v, scope));
    return args;
  }

  Value eval(const Expr& e, Scope& scope) {
    try {
      return eval_inner(e, scope);
    } catch (const ValueError& err) {
      error_at(e.offset, err.what());
    }
  }

  Value eval_inner(const Expr& e, Scope& scope) {
    switch (e.kind) {
      case Expr::Kind::kLiteral:
        return e.literal;
      case Expr::Kind::kName: {
        const Value* v = scope.find(e.name);
        return v ? *v : Value::undefined(fmt::format("'{}' is undefined", e.name));
      }
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        ValueList items;
        items.reserve(e.args.size());
        for (const ExprPtr& a : e.args) items.push_back(eval(*a, scope));
        return e.kind == Expr::Kind::kTuple ? Value::tuple(std::move(items))
                                            : Value(std::move(items));
      }
      case Expr::Kind::kDict: {
        auto dict = std::make_shared<ValueDict>();
        for (size_t i = 0; i < e.keys.size(); ++i) {
          Value key = eval(*e.keys[i], scope);
          dict->set(key.str(), eval(*e.args[i], scope));
        }
        return Value(std::move(dict));
      }
      case Expr::Kind::kGetAttr: {
        Value object = eval(*e.args[0], scope);
        if (object.is_undefined()) undefined_error(object);
        if (object.is_dict()) {
          const Value* found = object.as_dict().find(e.name);
          if (found) return *found;
        }
        return Value::undefined(
            fmt::format("'{} object' has no attribute '{}'", object.type_name(), e.name));
      }
      case Expr::Kind::kGetItem: {
        Value object = eval(*e.args[0], scope);
        if (object.is_undefined()) undefined_error(object);
        Value index = eval(*e.args[1], scope);
        Value result = python_index(object, index);
        if (result.is_undefined()) {
          return Value::undefined(
              fmt::format("'{} object' has no element {}", object.type_name(), index.repr()));
        }
        return result;
      }
      case Expr::Kind::kSlice: {
        Value object = eval(*e.args[0], scope);
        auto part = [&](size_t i) { return e.args[i] ? eval(*e.args[i], scope) : Value::none(); };
        return python_slice(object, part(1), part(2), part(3));
      }
      case Expr::Kind::kCall:
        return eval_call(e, scope);
      case Expr::Kind::kFilter: {
        Value value = eval(*e.args[0], scope);
        return apply_filter(e.name, value, eval_args(e, scope, 1));
      }
      case Expr::Kind::kTest: {
        Value value = eval(*e.args[0], scope);
        return Value(apply_test(e.name, value, eval_args(e, scope, 1)) != e.negated);
      }
      case Expr::Kind::kNot:
        return Value(!eval(*e.args[0], scope).truthy());
      case Expr::Kind::kNeg:
      case Expr::Kind::kPos: {
        Value v = eval(*e.args[0], scope);
        if (v.is_undefined()) undefined_error(v);
        if (e.kind == Expr::Kind::kPos && (v.is_number() || v.is_bool()))
          return v.is_bool() ? Value(int64_t{v.as_bool()}) : v;
        if (v.is_int()) {
          if (v.as_int() == INT64_MIN) value_error("integer overflow in unary -");
          return Value(-v.as_int());
        }
        if (v.is_float()) return Value(-v.as_float());
        if (v.is_bool()) return Value(-static_cast<int64_t>(v.as_bool()));
        value_error("bad operand type for unary {}: '{}'", e.kind == Expr::Kind::kNeg ? "-" : "+",
                    v.type_name());
      }
      case Expr::Kind::kBinary:
        return eval_binary(e, scope);
      case Expr::Kind::kCompare: {
        Value left = eval(*e.args[0], scope);
        for (size_t k = 0; k < e.ops.size(); ++k) {
          Value right = eval(*e.args[k + 1], scope);
          if (!compare(e.ops[k], left, right)) return Value(false);
          left = std::move(right);
        }
        return Value(true);
      }
      case Expr::Kind::kCondition: {
        if (eval(*e.args[1], scope).truthy()) return eval(*e.args[0], scope);
        return e.args[2] ? eval(*e.args[2], scope)
                         : Value::undefined(
                               "the conditional expression evaluated to false and has no else");
      }
    }
    return Value();
  }

  Value eval_binary(const Expr& e, Scope& scope) {
    if (e.op == BinaryOp::kAnd || e.op == BinaryOp::kOr) {
      Value left = eval(*e.args[0], scope);
      bool t = left.truthy();
      if ((e.op == BinaryOp::kAnd) != t) return left;
      return eval(*e.args[1], scope);
    }
    Value a = eval(*e.args[0], scope);
    Value b = eval(*e.args[1], scope);
    if (e.op == BinaryOp::kConcat) return Value(a.str() + b.str());
    return arithmetic(e.op, a, b);
  }

  static bool compare(BinaryOp op, const Value& a, const Value& b) {
    switch (op) {
      case BinaryOp::kEq:
        return values_equal(a, b);
      case BinaryOp::kNe:
        return !values_equal(a, b);
      case BinaryOp::kIn:
        return contains(b, a);
      case BinaryOp::kNotIn:
        return !contains(b, a);
      default:
        break;
    }
    if (a.is_undefined()) undefined_error(a);
    if (b.is_undefined()) undefined_error(b);
    if (op == BinaryOp::kLt) return values_less(a, b);
    if (op == BinaryOp::kGt) return values_less(b, a);
    if (op == BinaryOp::kLe) return !values_less(b, a);
    return !values_less(a, b);
  }

  Value eval_call(const Expr& e, Scope& scope) {
    const Expr& callee = *e.args[0];
    Value function;
    if (callee.kind == Expr::Kind::kGetAttr) {
      Value object = eval(*callee.args[0], scope);
      if (object.is_undefined()) undefined_error(object);
      CallArgs args = eval_args(e, scope, 1);
      Value result;
      if (call_method(object, callee.name, args, result)) return result;
      const Value* attribute = object.is_dict() ? object.as_dict().find(callee.name) : nullptr;
      if (attribute == nullptr || !attribute->is_callable()) {
        value_error("'{}' object has no method '{}'", object.type_name(), callee.name);
      }
      return attribute->as_callable().call(args);
    }
    function = eval(callee, scope);
    if (function.is_undefined()) undefined_error(function);
    if (!function.is_callable()) value_error("'{}' object is not callable", function.type_name());
    return function.as_callable().call(eval_args(e, scope, 1));
  }

  const SourcePositions& positions_;
  int depth_ = 0;
  int64_t steps_ = 0;  // count_step()
};

}  // namespace

std::string render_template(const Body& body, const SourcePositions& positions,
                            const ValueDict& variables) {
  Scope globals;
  ValueDict builtins;
  add_builtin_globals(builtins);
  globals.vars = std::move(builtins.items);
  Scope root{&globals, variables.items};
  Renderer renderer(positions);
  std::string out;
  renderer.run(body, root, out);
  return out;
}

}  // namespace relayllm::jinja
