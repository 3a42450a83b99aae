#include "relayllm/server/json_body.h"

#include <string>
#include <vector>

#include "relayllm/server/api_error.h"

namespace relayllm {
namespace {

// nlohmann's own parser is iterative, but its DOM callback cannot stop at a depth
// without first building the deep value; this SAX handler builds the DOM itself,
// stops at the limit, and knows the path of the value being parsed. `json` is
// nlohmann::json, or ordered_json where the client's key order matters (chat
// templates print tools and arguments in the order the client wrote them).
template <class json>
class BoundedDomBuilder {
 public:
  explicit BoundedDomBuilder(int max_depth) : max_depth_(max_depth) {}

  bool null() { return put(nullptr); }
  bool boolean(bool v) { return put(v); }
  bool number_integer(typename json::number_integer_t v) { return put(v); }
  bool number_unsigned(typename json::number_unsigned_t v) { return put(v); }
  bool number_float(typename json::number_float_t v, const std::string&) { return put(v); }
  bool string(std::string& v) { return put(std::move(v)); }
  bool binary(typename json::binary_t&) { return fail_here("binary values are not JSON"); }
  bool start_object(size_t) { return open(json::object()); }
  bool start_array(size_t) { return open(json::array()); }
  bool key(std::string& k) {
    stack_.back().key = std::move(k);
    return true;
  }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool parse_error(size_t, const std::string&, const nlohmann::json::exception& e) {
    std::string what = e.what();
    // "[json.exception.parse_error.101] parse error at ..." -> "parse error at ..."
    if (auto end = what.find("] "); what.rfind("[json.exception.", 0) == 0 && end != what.npos)
      what = what.substr(end + 2);
    return fail_here(what);
  }

  json& result() { return root_; }
  const std::string& error() const { return error_; }

 private:
  struct Frame {
    json* container;
    std::string key;  // objects: the key whose value comes next
  };

  // Where the value now being parsed sits: messages[0].content
  std::string path() const {
    std::string out;
    for (size_t i = 0; i < stack_.size(); ++i) {
      const Frame& f = stack_[i];
      if (f.container->is_object()) {
        if (!out.empty()) out += '.';
        out += f.key;
      } else {
        // An enclosing array holds the open child as its last element; the innermost
        // one has not received the value being parsed yet.
        size_t n = f.container->size();
        size_t index = i + 1 < stack_.size() ? n - 1 : n;
        out += '[' + std::to_string(index) + ']';
      }
    }
    return out;
  }

  bool fail_here(const std::string& message) {
    std::string where = path();
    if (where.size() > 160) where = where.substr(0, 160) + "...";
    error_ = where.empty() ? message : "field '" + where + "': " + message;
    return false;
  }

  json* place(json&& value) {
    if (stack_.empty()) {
      root_ = std::move(value);
      return &root_;
    }
    Frame& top = stack_.back();
    if (top.container->is_object()) {
      json& slot = (*top.container)[top.key];
      slot = std::move(value);
      return &slot;
    }
    top.container->push_back(std::move(value));
    return &top.container->back();
  }

  bool put(json&& value) {
    place(std::move(value));
    return true;
  }

  bool open(json&& empty) {
    if (int(stack_.size()) >= max_depth_)
      return fail_here("JSON nested deeper than " + std::to_string(max_depth_) + " levels");
    // Safe to keep: objects never move their values, and an array's elements only move
    // when the array grows, which cannot happen while one of its children is open.
    stack_.push_back({place(std::move(empty)), {}});
    return true;
  }

  bool close() {
    stack_.pop_back();
    return true;
  }

  int max_depth_;
  json root_;
  std::vector<Frame> stack_;
  std::string error_;
};

template <class json>
json parse_bounded(std::string_view text, int max_depth) {
  BoundedDomBuilder<json> builder(max_depth);
  bool ok = json::sax_parse(text.begin(), text.end(), &builder);
  if (!ok) fail_api(400, "malformed JSON body: {}", builder.error());
  return std::move(builder.result());
}

}  // namespace

nlohmann::json parse_json_body(std::string_view text, int max_depth) {
  return parse_bounded<nlohmann::json>(text, max_depth);
}

nlohmann::ordered_json parse_json_body_ordered(std::string_view text, int max_depth) {
  return parse_bounded<nlohmann::ordered_json>(text, max_depth);
}

}  // namespace relayllm
