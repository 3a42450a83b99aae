#include "relayllm/chat/jinja_builtins.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <ctime>
#include <optional>

#include "relayllm/common/error.h"

namespace relayllm::jinja {
namespace {

// ---- UTF-8 by code point -------------------------------------------------------------

// Byte offsets where each code point starts, plus s.size() at the end.
std::vector<size_t> code_point_offsets(std::string_view s) {
  std::vector<size_t> offsets;
  offsets.reserve(s.size() + 1);
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xc0) != 0x80) offsets.push_back(i);
  }
  offsets.push_back(s.size());
  return offsets;
}

uint32_t decode_at(std::string_view s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  auto cont = [&](size_t k) {
    return i + k < s.size() ? static_cast<uint32_t>(static_cast<unsigned char>(s[i + k]) & 0x3f)
                            : 0u;
  };
  if (c < 0x80) return c;
  if (c < 0xe0) return ((c & 0x1fu) << 6) | cont(1);
  if (c < 0xf0) return ((c & 0x0fu) << 12) | (cont(1) << 6) | cont(2);
  return ((c & 0x07u) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3);
}

bool python_isspace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

// str.strip / lstrip / rstrip: `chars` none means whitespace.
std::string python_strip(std::string_view s, const Value* chars, bool left, bool right) {
  std::vector<uint32_t> set;
  bool by_set = chars != nullptr && !chars->is_none() && !chars->is_undefined();
  if (by_set) {
    if (!chars->is_string())
      value_error("strip arg must be None or str, not {}", chars->type_name());
    const std::string& c = chars->as_string();
    auto offsets = code_point_offsets(c);
    for (size_t k = 0; k + 1 < offsets.size(); ++k) set.push_back(decode_at(c, offsets[k]));
  }
  auto strip_it = [&](uint32_t cp) {
    return by_set ? std::find(set.begin(), set.end(), cp) != set.end() : python_isspace(cp);
  };
  auto offsets = code_point_offsets(s);
  size_t begin = 0, end = offsets.size() - 1;  // code point indexes
  if (left) {
    while (begin < end && strip_it(decode_at(s, offsets[begin]))) ++begin;
  }
  if (right) {
    while (end > begin && strip_it(decode_at(s, offsets[end - 1]))) --end;
  }
  return std::string(s.substr(offsets[begin], offsets[end] - offsets[begin]));
}

std::string ascii_upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
std::string ascii_lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
std::string capitalize(const std::string& s) {
  std::string out = ascii_lower(s);
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}
// Upper-cases the first letter after any character for which `boundary` holds.
template <typename Boundary>
std::string title_case(const std::string& s, Boundary boundary) {
  std::string out;
  bool at_start = true;
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    out += static_cast<char>(at_start ? std::toupper(u) : std::tolower(u));
    at_start = boundary(c);
  }
  return out;
}

std::vector<std::string> python_split(const std::string& s, const Value* sep, int64_t maxsplit) {
  std::vector<std::string> parts;
  if (sep == nullptr || sep->is_none()) {
    auto offsets = code_point_offsets(s);
    size_t n = offsets.size() - 1, i = 0;
    while (true) {
      while (i < n && python_isspace(decode_at(s, offsets[i]))) ++i;
      if (i >= n) break;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) >= maxsplit) {
        size_t end = n;
        while (end > i && python_isspace(decode_at(s, offsets[end - 1]))) --end;
        parts.push_back(s.substr(offsets[i], offsets[end] - offsets[i]));
        break;
      }
      size_t j = i;
      while (j < n && !python_isspace(decode_at(s, offsets[j]))) ++j;
      parts.push_back(s.substr(offsets[i], offsets[j] - offsets[i]));
      i = j;
    }
    return parts;
  }
  if (!sep->is_string()) value_error("split: separator must be a string, not {}", sep->type_name());
  const std::string& d = sep->as_string();
  if (d.empty()) value_error("split: empty separator");
  size_t pos = 0;
  while (true) {
    size_t hit = s.find(d, pos);
    if (hit == std::string::npos ||
        (maxsplit >= 0 && static_cast<int64_t>(parts.size()) >= maxsplit)) {
      parts.push_back(s.substr(pos));
      return parts;
    }
    parts.push_back(s.substr(pos, hit - pos));
    pos = hit + d.size();
  }
}

std::vector<std::string> python_rsplit(const std::string& s, const Value* sep, int64_t maxsplit) {
  if (maxsplit < 0 || sep == nullptr || sep->is_none()) return python_split(s, sep, maxsplit);
  if (!sep->is_string() || sep->as_string().empty()) value_error("rsplit: bad separator");
  const std::string& d = sep->as_string();
  std::vector<std::string> parts;
  size_t end = s.size();
  while (static_cast<int64_t>(parts.size()) < maxsplit) {
    if (end < d.size()) break;
    size_t hit = s.rfind(d, end - d.size());
    if (hit == std::string::npos) break;
    parts.push_back(s.substr(hit + d.size(), end - hit - d.size()));
    end = hit;
  }
  parts.push_back(s.substr(0, end));
  std::reverse(parts.begin(), parts.end());
  return parts;
}

std::string python_replace(const std::string& s, const std::string& from, const std::string& to,
                           int64_t count) {
  if (from.empty()) value_error("replace: empty search string is not supported");
  std::string out;
  size_t pos = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
    ++done;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

Value strings_to_list(std::vector<std::string> parts) {
  ValueList list;
  list.reserve(parts.size());
  for (auto& p : parts) list.emplace_back(std::move(p));
  return Value(std::move(list));
}

// ---- argument helpers ----------------------------------------------------------------

const std::string& string_arg(const CallArgs& args, size_t index, std::string_view name,
                              std::string_view what) {
  const Value* v = args.get(index, name);
  if (v == nullptr || !v->is_string())
    value_error("{}: argument '{}' must be a string", what, name);
  return v->as_string();
}

int64_t int_arg(const CallArgs& args, size_t index, std::string_view name, int64_t fallback) {
  const Value* v = args.get(index, name);
  if (v == nullptr || v->is_none()) return fallback;
  if (v->is_int()) return v->as_int();
  if (v->is_bool()) return v->as_bool() ? 1 : 0;
  value_error("argument '{}' must be an integer, not {}", name, v->type_name());
}

bool bool_arg(const CallArgs& args, size_t index, std::string_view name, bool fallback) {
  const Value* v = args.get(index, name);
  return v == nullptr ? fallback : v->truthy();
}

std::string_view expect_string(const Value& v, std::string_view what) {
  if (!v.is_string()) value_error("{} expects a string, got {}", what, v.type_name());
  return v.as_string();
}

}  // namespace

ValueList iterate(const Value& v, std::string_view what) {
  switch (v.kind()) {
    case Value::Kind::kList:
      return v.as_list();
    case Value::Kind::kDict: {
      ValueList keys;
      for (const auto& item : v.as_dict().items) keys.emplace_back(item.first);
      return keys;
    }
    case Value::Kind::kString: {
      const std::string& s = v.as_string();
      auto offsets = code_point_offsets(s);
      ValueList chars;
      for (size_t k = 0; k + 1 < offsets.size(); ++k) {
        chars.emplace_back(s.substr(offsets[k], offsets[k + 1] - offsets[k]));
      }
      return chars;
    }
    case Value::Kind::kUndefined:
      return {};
    default:
      if (what.empty()) value_error("'{}' object is not iterable", v.type_name());
      value_error("{}: '{}' object is not iterable", what, v.type_name());
  }
}

namespace {

// Jinja's attribute lookup for filters like map(attribute=...): dotted paths, int parts index.
Value get_attribute_path(const Value& v, const std::string& path) {
  Value current = v;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t dot = path.find('.', pos);
    std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    if (current.is_dict()) {
      const Value* found = current.as_dict().find(part);
      current = found ? *found : Value::undefined(part);
    } else if (current.is_list() && !part.empty() && part.size() < 18 &&
               std::all_of(part.begin(), part.end(), ::isdigit)) {
      current = python_index(current, Value(static_cast<int64_t>(std::stoll(part))));
    } else {
      current = Value::undefined(part);
    }
    if (dot == std::string::npos) break;
    pos = dot + 1;
  }
  return current;
}

Value sort_key(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value(ascii_lower(v.as_string()));
  return v;
}

CallArgs tail_args(const CallArgs& args, size_t from) {
  CallArgs out;
  for (size_t i = from; i < args.positional.size(); ++i)
    out.positional.push_back(args.positional[i]);
  out.keyword = args.keyword;
  return out;
}

Value select_items(const Value& value, const CallArgs& args, bool by_attribute, bool keep) {
  ValueList out;
  size_t test_index = by_attribute ? 1 : 0;
  std::string attribute = by_attribute ? string_arg(args, 0, "attribute", "selectattr") : "";
  const Value* test_name = args.get(test_index, "test");
  CallArgs test_args = tail_args(args, test_index + 1);
  test_args.keyword.clear();
  for (const Value& item : iterate(value, "select")) {
    Value subject = by_attribute ? get_attribute_path(item, attribute) : item;
    bool passed = test_name == nullptr
                      ? subject.truthy()
                      : apply_test(expect_string(*test_name, "select"), subject, test_args);
    if (passed == keep) out.push_back(item);
  }
  return Value(std::move(out));
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string indent_text(const std::string& s, const Value* width, bool first, bool blank) {
  std::string pad =
      width == nullptr ? "    "
      : width->is_string()
          ? width->as_string()
          : std::string(
                static_cast<size_t>(std::max<int64_t>(0, width->is_int() ? width->as_int() : 4)),
                ' ');
  std::vector<std::string> lines;
  // splitlines() of s + "\n": every line, without the empty one after the final newline.
  std::string text = s + "\n";
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    lines.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) {
      out += '\n';
      if (blank || !lines[i].empty()) out += pad;
    }
    out += lines[i];
  }
  if (first) out = pad + out;
  return out;
}

// A double that converts to int64 without undefined behaviour (finite, |d| < 2^63).
bool fits_int64(double d) { return std::isfinite(d) && d > -9.2e18 && d < 9.2e18; }

Value to_int(const Value& v, const Value& fallback) {
  switch (v.kind()) {
    case Value::Kind::kInt:
      return v;
    case Value::Kind::kBool:
      return Value(static_cast<int64_t>(v.as_bool()));
    case Value::Kind::kFloat:
      return fits_int64(v.as_float()) ? Value(static_cast<int64_t>(v.as_float())) : fallback;
    case Value::Kind::kString: {
      std::string s = python_strip(v.as_string(), nullptr, true, true);
      try {
        size_t used = 0;
        int64_t i = std::stoll(s, &used);
        if (used == s.size()) return Value(i);
        double d = std::stod(s, &used);
        if (used == s.size() && fits_int64(d)) return Value(static_cast<int64_t>(d));
      } catch (const std::exception&) {
      }
      return fallback;
    }
    default:
      return fallback;
  }
}

Value to_float(const Value& v, const Value& fallback) {
  switch (v.kind()) {
    case Value::Kind::kInt:
    case Value::Kind::kBool:
    case Value::Kind::kFloat:
      return Value(v.to_double());
    case Value::Kind::kString: {
      std::string s = python_strip(v.as_string(), nullptr, true, true);
      try {
        size_t used = 0;
        double d = std::stod(s, &used);
        if (used == s.size()) return Value(d);
      } catch (const std::exception&) {
      }
      return fallback;
    }
    default:
      return fallback;
  }
}

}  // namespace

size_t utf8_length(std::string_view s) { return code_point_offsets(s).size() - 1; }

Value python_index(const Value& object, const Value& index) {
  if (object.is_dict()) {
    if (!index.is_string()) return Value::undefined(index.str());
    const Value* found = object.as_dict().find(index.as_string());
    return found ? *found : Value::undefined(index.as_string());
  }
  if ((object.is_list() || object.is_string()) && (index.is_int() || index.is_bool())) {
    int64_t i = index.is_int() ? index.as_int() : static_cast<int64_t>(index.as_bool());
    if (object.is_list()) {
      const ValueList& list = object.as_list();
      int64_t n = static_cast<int64_t>(list.size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value::undefined(fmt::format("[{}]", index.str()));
      return list[static_cast<size_t>(i)];
    }
    const std::string& s = object.as_string();
    auto offsets = code_point_offsets(s);
    int64_t n = static_cast<int64_t>(offsets.size()) - 1;
    if (i < 0) i += n;
    if (i < 0 || i >= n) return Value::undefined(fmt::format("[{}]", index.str()));
    return Value(s.substr(offsets[static_cast<size_t>(i)],
                          offsets[static_cast<size_t>(i) + 1] - offsets[static_cast<size_t>(i)]));
  }
  return Value::undefined(index.str());
}

Value python_slice(const Value& object, const Value& start_v, const Value& stop_v,
                   const Value& step_v) {
  auto opt_int = [](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.is_none() || v.is_undefined()) return std::nullopt;
    if (v.is_int()) return v.as_int();
    value_error("slice {} must be an integer or none, not {}", what, v.type_name());
  };
  int64_t step = opt_int(step_v, "step").value_or(1);
  if (step == 0) value_error("slice step cannot be zero");
  std::vector<size_t> offsets;
  int64_t n;
  if (object.is_list()) {
    n = static_cast<int64_t>(object.as_list().size());
  } else if (object.is_string()) {
    offsets = code_point_offsets(object.as_string());
    n = static_cast<int64_t>(offsets.size()) - 1;
  } else if (object.is_undefined()) {
    value_error("cannot slice: {}", object.undefined_name());
  } else {
    value_error("'{}' object is not subscriptable", object.type_name());
  }
  int64_t lower = step > 0 ? 0 : -1, upper = step > 0 ? n : n - 1;
  auto clamp = [&](std::optional<int64_t> v, int64_t fallback) {
    if (!v) return fallback;
    int64_t x = *v;
    if (x < 0) x += n;
    return std::clamp(x, lower, upper);
  };
  int64_t start = clamp(opt_int(start_v, "start"), step > 0 ? lower : upper);
  int64_t stop = clamp(opt_int(stop_v, "stop"), step > 0 ? upper : lower);
  if (object.is_list()) {
    ValueList out;
    const ValueList& list = object.as_list();
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
      out.push_back(list[static_cast<size_t>(i)]);
    return Value(std::move(out));
  }
  const std::string& s = object.as_string();
  std::string out;
  if (step == 1) {
    if (start < stop)
      out = s.substr(offsets[static_cast<size_t>(start)],
                     offsets[static_cast<size_t>(stop)] - offsets[static_cast<size_t>(start)]);
    return Value(std::move(out));
  }
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    size_t k = static_cast<size_t>(i);
    out.append(s, offsets[k], offsets[k + 1] - offsets[k]);
  }
  return Value(std::move(out));
}

Value apply_filter(std::string_view name, const Value& v, const CallArgs& args) {
  if (name == "default" || name == "d") {
    const Value* fallback = args.get(0, "default_value");
    bool boolean = bool_arg(args, 1, "boolean", false);
    if (v.is_undefined() || (boolean && !v.truthy())) return fallback ? *fallback : Value("");
    return v;
  }
  if (name == "length" || name == "count") {
    if (v.is_string()) return Value(static_cast<int64_t>(utf8_length(v.as_string())));
    if (v.is_list()) return Value(static_cast<int64_t>(v.as_list().size()));
    if (v.is_dict()) return Value(static_cast<int64_t>(v.as_dict().items.size()));
    if (v.is_undefined()) return Value(0);
    value_error("object of type '{}' has no len()", v.type_name());
  }
  if (name == "tojson") {
    const Value* indent = args.get(1, "indent");
    if (args.get(0, "ensure_ascii") && args.get(0, "ensure_ascii")->truthy()) {
      value_error("tojson: ensure_ascii=true is not supported");
    }
    if (args.get(2, "separators") && !args.get(2, "separators")->is_none()) {
      value_error("tojson: custom separators are not supported");
    }
    int ind = indent == nullptr || indent->is_none() ? -1 : static_cast<int>(indent->as_int());
    return Value(v.to_json(ind, bool_arg(args, 3, "sort_keys", false)));
  }
  if (name == "trim") return Value(python_strip(v.str(), args.get(0, "chars"), true, true));
  if (name == "string") return v.is_string() ? v : Value(v.str());
  if (name == "upper") return Value(ascii_upper(v.str()));
  if (name == "lower") return Value(ascii_lower(v.str()));
  if (name == "capitalize") return Value(capitalize(v.str()));
  if (name == "title") {
    return Value(title_case(v.str(), [](char c) {
      return std::isspace(static_cast<unsigned char>(c)) || c == '-' || c == '[' || c == '{' ||
             c == '(' || c == '"' || c == '\'';
    }));
  }
  if (name == "replace") {
    return Value(python_replace(v.str(), string_arg(args, 0, "old", "replace"),
                                string_arg(args, 1, "new", "replace"),
                                int_arg(args, 2, "count", -1)));
  }
  if (name == "safe") return v;
  if (name == "escape" || name == "e") return Value(html_escape(v.str()));
  if (name == "indent") {
    return Value(indent_text(v.str(), args.get(0, "width"), bool_arg(args, 1, "first", false),
                             bool_arg(args, 2, "blank", false)));
  }
  if (name == "join") {
    const Value* sep = args.get(0, "d");
    const Value* attribute = args.get(1, "attribute");
    std::string out;
    bool first = true;
    for (const Value& item : iterate(v, "join")) {
      if (!first && sep) out += sep->str();
      first = false;
      out += (attribute ? get_attribute_path(item, attribute->str()) : item).str();
    }
    return Value(std::move(out));
  }
  if (name == "first" || name == "last") {
    ValueList items = iterate(v, name);
    if (items.empty()) return Value::undefined(std::string(name));
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") return Value(iterate(v, "list"));
  if (name == "reverse") {
    if (v.is_string()) return python_slice(v, Value::none(), Value::none(), Value(-1));
    ValueList items = iterate(v, "reverse");
    std::reverse(items.begin(), items.end());
    return Value(std::move(items));
  }
  if (name == "int") {
    const Value* fallback = args.get(0, "default");
    return to_int(v, fallback ? *fallback : Value(0));
  }
  if (name == "float") {
    const Value* fallback = args.get(0, "default");
    return to_float(v, fallback ? *fallback : Value(0.0));
  }
  if (name == "abs") {
    if (v.is_int()) return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
    return Value(std::fabs(v.to_double()));
  }
  if (name == "round") {
    int64_t precision = int_arg(args, 0, "precision", 0);
    const Value* method = args.get(1, "method");
    std::string how = method ? method->str() : "common";
    double scale = std::pow(10.0, static_cast<double>(precision));
    double x = v.to_double() * scale;
    double r = how == "ceil" ? std::ceil(x) : how == "floor" ? std::floor(x) : std::nearbyint(x);
    if (how == "common" && v.is_int()) return v;
    return Value(r / scale);
  }
  if (name == "items") {
    if (v.is_undefined()) return Value(ValueList{});
    if (!v.is_dict()) value_error("items filter expects a mapping, got {}", v.type_name());
    ValueList out;
    for (const auto& [k, item] : v.as_dict().items)
      out.push_back(Value::tuple(ValueList{Value(k), item}));
    return Value(std::move(out));
  }
  if (name == "dictsort") {
    if (!v.is_dict()) value_error("dictsort expects a mapping, got {}", v.type_name());
    bool case_sensitive = bool_arg(args, 0, "case_sensitive", false);
    const Value* by = args.get(1, "by");
    bool by_value = by && by->str() == "value";
    ValueList out;
    for (const auto& [k, item] : v.as_dict().items)
      out.push_back(Value::tuple(ValueList{Value(k), item}));
    std::stable_sort(out.begin(), out.end(), [&](const Value& a, const Value& b) {
      size_t i = by_value ? 1 : 0;
      return values_less(sort_key(a.as_list()[i], case_sensitive),
                         sort_key(b.as_list()[i], case_sensitive));
    });
    if (bool_arg(args, 2, "reverse", false)) std::reverse(out.begin(), out.end());
    return Value(std::move(out));
  }
  if (name == "map") {
    ValueList out;
    const Value* attribute = nullptr;
    for (const auto& [k, item] : args.keyword) {
      if (k == "attribute") attribute = &item;
    }
    if (attribute != nullptr) {
      const Value* fallback = nullptr;
      for (const auto& [k, item] : args.keyword) {
        if (k == "default") fallback = &item;
      }
      for (const Value& item : iterate(v, "map")) {
        Value got = get_attribute_path(item, attribute->str());
        out.push_back(got.is_undefined() && fallback ? *fallback : got);
      }
      return Value(std::move(out));
    }
    if (args.positional.empty()) value_error("map: expected a filter name or attribute=");
    std::string filter = std::string(expect_string(args.positional[0], "map"));
    CallArgs rest = tail_args(args, 1);
    for (const Value& item : iterate(v, "map")) out.push_back(apply_filter(filter, item, rest));
    return Value(std::move(out));
  }
  if (name == "selectattr") return select_items(v, args, true, true);
  if (name == "rejectattr") return select_items(v, args, true, false);
  if (name == "select") return select_items(v, args, false, true);
  if (name == "reject") return select_items(v, args, false, false);
  if (name == "unique") {
    bool case_sensitive = bool_arg(args, 0, "case_sensitive", false);
    const Value* attribute = args.get(1, "attribute");
    ValueList out, seen;
    for (const Value& item : iterate(v, "unique")) {
      Value key =
          sort_key(attribute ? get_attribute_path(item, attribute->str()) : item, case_sensitive);
      if (std::none_of(seen.begin(), seen.end(),
                       [&](const Value& s) { return values_equal(s, key); })) {
        seen.push_back(key);
        out.push_back(item);
      }
    }
    return Value(std::move(out));
  }
  if (name == "sort") {
    bool reverse = bool_arg(args, 0, "reverse", false);
    bool case_sensitive = bool_arg(args, 1, "case_sensitive", false);
    const Value* attribute = args.get(2, "attribute");
    ValueList items = iterate(v, "sort");
    auto key = [&](const Value& item) {
      return sort_key(attribute ? get_attribute_path(item, attribute->str()) : item,
                      case_sensitive);
    };
    std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
      return reverse ? values_less(key(b), key(a)) : values_less(key(a), key(b));
    });
    return Value(std::move(items));
  }
  if (name == "min" || name == "max") {
    bool case_sensitive = bool_arg(args, 0, "case_sensitive", false);
    const Value* attribute = args.get(1, "attribute");
    ValueList items = iterate(v, name);
    if (items.empty()) return Value::undefined(std::string(name));
    size_t best = 0;
    for (size_t i = 1; i < items.size(); ++i) {
      Value a = sort_key(attribute ? get_attribute_path(items[i], attribute->str()) : items[i],
                         case_sensitive);
      Value b =
          sort_key(attribute ? get_attribute_path(items[best], attribute->str()) : items[best],
                   case_sensitive);
      if (name == "min" ? values_less(a, b) : values_less(b, a)) best = i;
    }
    return items[best];
  }
  if (name == "sum") {
    const Value* attribute = args.get(0, "attribute");
    const Value* start = args.get(1, "start");
    Value total = start ? *start : Value(0);
    for (const Value& item : iterate(v, "sum")) {
      Value x = attribute ? get_attribute_path(item, attribute->str()) : item;
      if (total.is_int() && x.is_int()) {
        total = Value(total.as_int() + x.as_int());
      } else {
        total = Value(total.to_double() + x.to_double());
      }
    }
    return total;
  }
  if (name == "attr") {
    std::string attribute = string_arg(args, 0, "name", "attr");
    if (v.is_dict()) {
      const Value* found = v.as_dict().find(attribute);
      return found ? *found : Value::undefined(attribute);
    }
    return Value::undefined(attribute);
  }
  if (name == "wordcount")
    return Value(static_cast<int64_t>(python_split(v.str(), nullptr, -1).size()));
  value_error("no filter named '{}'", name);
}

bool apply_test(std::string_view name, const Value& v, const CallArgs& args) {
  auto arg = [&]() -> const Value& {
    if (args.positional.empty()) value_error("test '{}' needs an argument", name);
    return args.positional[0];
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number() || v.is_bool();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "mapping") return v.is_dict() && !v.as_dict().is_namespace;
  if (name == "iterable") return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
  if (name == "sequence") return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
  if (name == "callable") return v.is_callable();
  if (name == "lower") return v.is_string() && ascii_lower(v.as_string()) == v.as_string();
  if (name == "upper") return v.is_string() && ascii_upper(v.as_string()) == v.as_string();
  if (name == "odd" || name == "even") {
    if (!v.is_int()) value_error("test '{}' expects an integer, got {}", name, v.type_name());
    bool odd = (v.as_int() % 2) != 0;
    return name == "odd" ? odd : !odd;
  }
  if (name == "divisibleby") {
    int64_t d = arg().is_int() ? arg().as_int() : 0;
    if (d == 0 || !v.is_int()) value_error("test 'divisibleby' expects integers");
    return v.as_int() % d == 0;
  }
  if (name == "eq" || name == "equalto" || name == "==") return values_equal(v, arg());
  if (name == "ne" || name == "!=") return !values_equal(v, arg());
  if (name == "lt" || name == "lessthan" || name == "<") return values_less(v, arg());
  if (name == "gt" || name == "greaterthan" || name == ">") return values_less(arg(), v);
  if (name == "le" || name == "<=") return !values_less(arg(), v);
  if (name == "ge" || name == ">=") return !values_less(v, arg());
  if (name == "sameas") {
    const Value& other = arg();
    if (v.kind() != other.kind()) return false;
    if (v.is_none() || v.is_undefined()) return true;
    if (v.is_bool()) return v.as_bool() == other.as_bool();
    if (v.is_list()) return &v.as_list() == &other.as_list();
    if (v.is_dict()) return &v.as_dict() == &other.as_dict();
    return values_equal(v, other);
  }
  if (name == "in") {
    const Value& container = arg();
    if (container.is_string() && v.is_string())
      return container.as_string().find(v.as_string()) != std::string::npos;
    if (container.is_dict())
      return v.is_string() && container.as_dict().find(v.as_string()) != nullptr;
    for (const Value& item : iterate(container, "in")) {
      if (values_equal(item, v)) return true;
    }
    return false;
  }
  value_error("no test named '{}'", name);
}

bool call_method(const Value& object, std::string_view name, const CallArgs& args, Value& result) {
  if (object.is_string()) {
    const std::string& s = object.as_string();
    if (name == "startswith" || name == "endswith") {
      const Value* prefix = args.get(0, "prefix");
      if (prefix == nullptr) value_error("{}() takes at least 1 argument", name);
      ValueList candidates = prefix->is_list() ? prefix->as_list() : ValueList{*prefix};
      bool hit = false;
      for (const Value& c : candidates) {
        std::string_view p = expect_string(c, name);
        hit = hit || (p.size() <= s.size() &&
                      (name == "startswith" ? s.compare(0, p.size(), p) == 0
                                            : s.compare(s.size() - p.size(), p.size(), p) == 0));
      }
      result = Value(hit);
      return true;
    }
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      result = Value(python_strip(s, args.get(0, "chars"), name != "rstrip", name != "lstrip"));
      return true;
    }
    if (name == "split" || name == "rsplit") {
      const Value* sep = args.get(0, "sep");
      int64_t maxsplit = int_arg(args, 1, "maxsplit", -1);
      result = strings_to_list(name == "split" ? python_split(s, sep, maxsplit)
                                               : python_rsplit(s, sep, maxsplit));
      return true;
    }
    if (name == "upper") {
      result = Value(ascii_upper(s));
      return true;
    }
    if (name == "lower") {
      result = Value(ascii_lower(s));
      return true;
    }
    if (name == "capitalize") {
      result = Value(capitalize(s));
      return true;
    }
    if (name == "title") {
      result =
          Value(title_case(s, [](char c) { return !std::isalpha(static_cast<unsigned char>(c)); }));
      return true;
    }
    if (name == "replace") {
      result = Value(python_replace(s, string_arg(args, 0, "old", "replace"),
                                    string_arg(args, 1, "new", "replace"),
                                    int_arg(args, 2, "count", -1)));
      return true;
    }
    if (name == "find" || name == "rfind" || name == "count") {
      std::string needle = string_arg(args, 0, "sub", name);
      if (name == "count") {
        int64_t n = 0;
        if (needle.empty()) {
          n = static_cast<int64_t>(utf8_length(s)) + 1;
        } else {
          for (size_t p = s.find(needle); p != std::string::npos;
               p = s.find(needle, p + needle.size()))
            ++n;
        }
        result = Value(n);
        return true;
      }
      size_t hit = name == "find" ? s.find(needle) : s.rfind(needle);
      result =
          Value(hit == std::string::npos ? int64_t{-1}
                                         : static_cast<int64_t>(utf8_length(s.substr(0, hit))));
      return true;
    }
    if (name == "join") {
      const Value* items = args.get(0, "iterable");
      if (items == nullptr) value_error("join() takes exactly one argument");
      std::string out;
      bool first = true;
      for (const Value& item : iterate(*items, "join")) {
        if (!first) out += s;
        first = false;
        out += expect_string(item, "str.join");
      }
      result = Value(std::move(out));
      return true;
    }
    if (name == "isdigit" || name == "isspace" || name == "isalpha" || name == "isalnum") {
      bool all = !s.empty();
      for (char c : s) {
        unsigned char u = static_cast<unsigned char>(c);
        bool ok = name == "isdigit"   ? std::isdigit(u)
                  : name == "isspace" ? std::isspace(u)
                  : name == "isalpha" ? std::isalpha(u)
                                      : std::isalnum(u);
        all = all && ok;
      }
      result = Value(all);
      return true;
    }
    return false;
  }
  if (object.is_dict() && !object.as_dict().is_namespace) {
    const ValueDict& dict = object.as_dict();
    if (name == "get") {
      const Value* key = args.get(0, "key");
      if (key == nullptr) value_error("get() takes at least 1 argument");
      const Value* found = key->is_string() ? dict.find(key->as_string()) : nullptr;
      const Value* fallback = args.get(1, "default");
      result = found ? *found : fallback ? *fallback : Value::none();
      return true;
    }
    if (name == "items" || name == "keys" || name == "values") {
      ValueList out;
      for (const auto& [k, v] : dict.items) {
        out.push_back(name == "items"  ? Value::tuple(ValueList{Value(k), v})
                      : name == "keys" ? Value(k)
                                       : v);
      }
      result = Value(std::move(out));
      return true;
    }
    return false;
  }
  return false;
}

namespace {

std::shared_ptr<const Callable> callable(std::string name,
                                         std::function<Value(const CallArgs&)> fn) {
  return std::make_shared<const Callable>(Callable{std::move(name), std::move(fn)});
}

Value kwargs_dict(const CallArgs& args, bool is_namespace, const char* what) {
  auto dict = std::make_shared<ValueDict>();
  dict->is_namespace = is_namespace;
  for (const Value& p : args.positional) {
    if (!p.is_dict())
      value_error("{}() positional argument must be a mapping, got {}", what, p.type_name());
    for (const auto& [k, v] : p.as_dict().items) dict->set(k, v);
  }
  for (const auto& [k, v] : args.keyword) dict->set(k, v);
  return Value(std::move(dict));
}

}  // namespace

void add_builtin_globals(ValueDict& globals) {
  globals.set("range", Value(callable("range", [](const CallArgs& args) {
                int64_t start = 0, stop = 0, step = 1;
                auto get = [&](size_t i) {
                  if (!args.positional[i].is_int())
                    value_error("range() arguments must be integers");
                  return args.positional[i].as_int();
                };
                if (args.positional.size() == 1) {
                  stop = get(0);
                } else if (args.positional.size() == 2 || args.positional.size() == 3) {
                  start = get(0);
                  stop = get(1);
                  if (args.positional.size() == 3) step = get(2);
                } else {
                  value_error("range() expects 1 to 3 arguments");
                }
                if (step == 0) value_error("range() step must not be zero");
                ValueList out;
                for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
                  if (out.size() > 10'000'000) value_error("range() too large");
                  out.emplace_back(i);
                }
                return Value(std::move(out));
              })));
  globals.set("namespace", Value(callable("namespace", [](const CallArgs& args) {
                return kwargs_dict(args, true, "namespace");
              })));
  globals.set("dict", Value(callable("dict", [](const CallArgs& args) {
                return kwargs_dict(args, false, "dict");
              })));
  globals.set("raise_exception",
              Value(callable("raise_exception", [](const CallArgs& args) -> Value {
                std::string message = args.positional.empty() ? "" : args.positional[0].str();
                fail("chat template raised an exception: {}", message);
              })));
  globals.set("strftime_now", Value(callable("strftime_now", [](const CallArgs& args) {
                std::string format = string_arg(args, 0, "format", "strftime_now");
                std::time_t now = std::time(nullptr);
                std::tm local{};
                localtime_r(&now, &local);
                char buf[256];
                size_t n = std::strftime(buf, sizeof(buf), format.c_str(), &local);
                return Value(std::string(buf, n));
              })));
}

}  // namespace relayllm::jinja
