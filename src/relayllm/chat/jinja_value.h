// The values a chat template computes with: JSON's kinds (kept in insertion
// order, as Python dicts are), plus Jinja's undefined and callables (globals,
// macros). Lists and dicts are shared by reference, like Python objects, so a
// namespace() changed inside a loop is seen after it.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace relayllm::jinja {

// A failure while computing a value; the interpreter adds the template position
// and rethrows it as relayllm::Error.
class ValueError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void value_error(fmt::format_string<Args...> format, Args&&... args) {
  throw ValueError(fmt::format(format, std::forward<Args>(args)...));
}

class Value;
using ValueList = std::vector<Value>;

struct ValueDict {
  std::vector<std::pair<std::string, Value>> items;
  bool is_namespace = false;  // namespace() objects accept `set ns.attr = ...`

  const Value* find(std::string_view key) const;
  void set(std::string key, Value value);
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;

  // The argument by position, else by keyword name, else nullptr.
  const Value* get(size_t index, std::string_view name) const;
};

struct Callable {
  std::string name;
  std::function<Value(const CallArgs&)> call;
};

struct Undefined {
  std::string name;  // why it is undefined, as the error message using it should say
};

class Value {
 public:
  enum class Kind : uint8_t {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kDict,
    kCallable
  };

  Value() : data_(Undefined{}) {}
  static Value undefined(std::string name) { return Value(Data(Undefined{std::move(name)})); }
  static Value none() { return Value(Data(nullptr)); }
  Value(bool b) : data_(b) {}
  Value(int64_t i) : data_(i) {}
  Value(int i) : data_(static_cast<int64_t>(i)) {}
  Value(double f) : data_(f) {}
  Value(std::string s) : data_(std::move(s)) {}
  Value(const char* s) : data_(std::string(s)) {}
  Value(ValueList list) : data_(std::make_shared<ValueList>(std::move(list))) {}
  Value(std::shared_ptr<ValueList> list) : data_(std::move(list)) {}
  Value(std::shared_ptr<ValueDict> dict) : data_(std::move(dict)) {}
  Value(std::shared_ptr<const Callable> fn) : data_(std::move(fn)) {}

  // Recursive; values nested deeper than kMaxJsonDepth are refused (the caller's
  // JSON is bounded anyway when it comes from a request, see server/json_body.h).
  static constexpr int kMaxJsonDepth = 512;
  static Value from_json(const nlohmann::ordered_json& j, int depth = 0);
  // A list that prints as a Python tuple: (a, b).
  static Value tuple(ValueList items) {
    Value v(std::move(items));
    v.tuple_ = true;
    return v;
  }
  bool is_tuple() const { return tuple_; }
  static Value new_dict() { return Value(std::make_shared<ValueDict>()); }

  Kind kind() const { return static_cast<Kind>(data_.index()); }
  bool is_undefined() const { return kind() == Kind::kUndefined; }
  bool is_none() const { return kind() == Kind::kNone; }
  bool is_bool() const { return kind() == Kind::kBool; }
  bool is_int() const { return kind() == Kind::kInt; }
  bool is_float() const { return kind() == Kind::kFloat; }
  bool is_number() const { return is_int() || is_float(); }
  bool is_string() const { return kind() == Kind::kString; }
  bool is_list() const { return kind() == Kind::kList; }
  bool is_dict() const { return kind() == Kind::kDict; }
  bool is_callable() const { return kind() == Kind::kCallable; }

  bool as_bool() const { return std::get<bool>(data_); }
  int64_t as_int() const { return std::get<int64_t>(data_); }
  double as_float() const { return std::get<double>(data_); }
  // Ints, floats and bools as a double (Python lets bools take part in arithmetic).
  double to_double() const;
  const std::string& as_string() const { return std::get<std::string>(data_); }
  ValueList& as_list() const { return *std::get<std::shared_ptr<ValueList>>(data_); }
  ValueDict& as_dict() const { return *std::get<std::shared_ptr<ValueDict>>(data_); }
  const Callable& as_callable() const { return *std::get<std::shared_ptr<const Callable>>(data_); }
  const std::string& undefined_name() const { return std::get<Undefined>(data_).name; }

  bool truthy() const;
  // Python's str() (what `{{ value }}` prints) and repr() (used inside containers).
  std::string str() const;
  std::string repr() const;
  // Python's json.dumps(value, ensure_ascii=False, indent=..., sort_keys=...).
  std::string to_json(int indent = -1, bool sort_keys = false) const;
  const char* type_name() const;  // Python-style names for error messages

 private:
  using Data = std::variant<Undefined, std::nullptr_t, bool, int64_t, double, std::string,
                            std::shared_ptr<ValueList>, std::shared_ptr<ValueDict>,
                            std::shared_ptr<const Callable>>;
  explicit Value(Data d) : data_(std::move(d)) {}
  Data data_;
  bool tuple_ = false;
};

// Python ==, and Python < for numbers and strings (Error on other kinds).
bool values_equal(const Value& a, const Value& b);
bool values_less(const Value& a, const Value& b);

// float.__repr__: shortest round-trip digits, fixed between 1e-4 and 1e16.
std::string python_float_repr(double x);

}  // namespace relayllm::jinja
