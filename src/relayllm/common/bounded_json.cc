#include "relayllm/common/bounded_json.h"

#include <fstream>
#include <iterator>

#include "relayllm/common/error.h"

namespace relayllm {
namespace {

using Json = nlohmann::json;
using DomParser = nlohmann::detail::json_sax_dom_parser<Json>;

// The DOM builder nlohmann's own parse() uses, plus a depth count and the last object key
// seen (so an error can say which field held the bad value). sax_parse dispatches
// statically, so forwarding costs nothing.
class BoundedSax {
 public:
  BoundedSax(Json& result, int max_depth) : dom_(result, true), max_depth_(max_depth) {}

  bool null() { return dom_.null(); }
  bool boolean(bool v) { return dom_.boolean(v); }
  bool number_integer(Json::number_integer_t v) { return dom_.number_integer(v); }
  bool number_unsigned(Json::number_unsigned_t v) { return dom_.number_unsigned(v); }
  bool number_float(Json::number_float_t v, const Json::string_t& s) {
    return dom_.number_float(v, s);
  }
  bool string(Json::string_t& v) { return dom_.string(v); }
  bool binary(Json::binary_t& v) { return dom_.binary(v); }
  bool start_object(std::size_t n) { return enter() && dom_.start_object(n); }
  bool key(Json::string_t& v) {
    last_key_ = v;
    return dom_.key(v);
  }
  bool end_object() {
    --depth_;
    return dom_.end_object();
  }
  bool start_array(std::size_t n) { return enter() && dom_.start_array(n); }
  bool end_array() {
    --depth_;
    return dom_.end_array();
  }
  bool parse_error(std::size_t position, const std::string& token,
                   const nlohmann::detail::exception& ex) {
    position_ = position;
    token_ = token;
    message_ = ex.what();
    number_overflow_ = ex.id == 406;
    return false;
  }

  bool too_deep() const { return too_deep_; }
  bool number_overflow() const { return number_overflow_; }
  std::size_t position() const { return position_; }
  const std::string& message() const { return message_; }
  const std::string& token() const { return token_; }
  const std::string& last_key() const { return last_key_; }
  int max_depth() const { return max_depth_; }

 private:
  bool enter() {
    if (++depth_ > max_depth_) {
      too_deep_ = true;
      return false;
    }
    return true;
  }

  DomParser dom_;
  int max_depth_;
  int depth_ = 0;
  bool too_deep_ = false, number_overflow_ = false;
  std::size_t position_ = 0;
  std::string message_, token_, last_key_;
};

}  // namespace

nlohmann::json parse_bounded_json(std::string_view text, const std::string& source, int max_depth) {
  Json result;
  BoundedSax sax(result, max_depth);
  bool ok = false;
  try {
    ok = Json::sax_parse(text.begin(), text.end(), &sax);
  } catch (const Json::exception& e) {
    fail("{}: invalid JSON: {}", source, e.what());
  }
  if (ok) return result;
  // The partial value is discarded by the iterative destructor, whatever its depth.
  if (sax.too_deep())
    fail("{}: JSON nests deeper than {} levels (near byte {})", source, sax.max_depth(),
         sax.position());
  if (sax.number_overflow())
    fail(
        "{}: number {} is out of range{}", source, sax.token(),
        sax.last_key().empty() ? std::string() : fmt::format(" (in field \"{}\")", sax.last_key()));
  fail("{}: invalid JSON: {}", source, sax.message());
}

nlohmann::json read_bounded_json_file(const std::string& path, int max_depth) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open file", path);
  // Parsing from memory is about twice as fast as from the stream (tokenizer.json is big).
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_bounded_json(text, path, max_depth);
}

}  // namespace relayllm
