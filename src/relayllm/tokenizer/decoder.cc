#include "relayllm/tokenizer/decoder.h"

#include "relayllm/common/json_fields.h"
#include "relayllm/common/utf8.h"
#include "relayllm/tokenizer/byte_level.h"
#include "relayllm/tokenizer/regex.h"
#include "relayllm/tokenizer/sequence_parts.h"
#include "relayllm/tokenizer/tokenizer_limits.h"

namespace relayllm {

using json_fields::child;
using json_fields::field;
using json_fields::field_or;
namespace {

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts)
      : parts_(std::move(parts)) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (const auto& part : parts_) tokens = part->decode_chain(std::move(tokens));
    return tokens;
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

class ByteLevelDecoder final : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::string bytes;
    for (const auto& token : tokens) {
      // A token with a character outside the byte map (an added token) contributes its own UTF-8.
      std::string mapped;
      bool all_mapped = utf8::is_valid(token);
      if (all_mapped) {
        for (uint32_t cp : utf8::decode(token)) {
          int b = byte_level::char_to_byte(cp);
          if (b < 0) {
            all_mapped = false;
            break;
          }
          mapped.push_back(char(b));
        }
      }
      bytes += all_mapped ? mapped : token;
    }
    return {utf8::to_valid(bytes)};
  }
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(Regex pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (auto& token : tokens) token = pattern_.replace_all(token, content_);
    return tokens;
  }

 private:
  Regex pattern_;
  std::string content_;
};

int parse_byte_token(const std::string& token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
  int value = 0;
  for (int i = 3; i < 5; ++i) {
    char c = token[size_t(i)];
    int digit = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

class ByteFallbackDecoder final : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    size_t pending_count = 0;
    auto flush = [&] {
      if (pending_count == 0) return;
      // Invalid byte runs become one U+FFFD per byte token, as in the reference.
      if (utf8::is_valid(pending)) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending_count; ++i) out.emplace_back(utf8::kReplacement);
      }
      pending.clear();
      pending_count = 0;
    };
    for (auto& token : tokens) {
      int b = parse_byte_token(token);
      if (b >= 0) {
        pending.push_back(char(b));
        ++pending_count;
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    return out;
  }
};

class FuseDecoder final : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::string all;
    for (const auto& token : tokens) all += token;
    return {all};
  }
};

class StripDecoder final : public Decoder {
 public:
  StripDecoder(uint32_t content, size_t start, size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (auto& token : tokens) {
      std::vector<uint32_t> cps = utf8::decode(token);
      size_t begin = 0, end = cps.size();
      while (begin < start_ && begin < end && cps[begin] == content_) ++begin;
      size_t stripped = 0;
      while (stripped < stop_ && end > begin && cps[end - 1] == content_) --end, ++stripped;
      token =
          utf8::encode(std::vector<uint32_t>(cps.begin() + long(begin), cps.begin() + long(end)));
    }
    return tokens;
  }

 private:
  uint32_t content_;
  size_t start_, stop_;
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(uint32_t replacement, bool strip_first)
      : replacement_(replacement), strip_first_(strip_first) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      for (uint32_t cp : utf8::decode(tokens[i])) {
        if (cp != replacement_)
          utf8::append(out, cp);
        else if (!(i == 0 && strip_first_))
          out.push_back(' ');
      }
      tokens[i] = std::move(out);
    }
    return tokens;
  }

 private:
  uint32_t replacement_;
  bool strip_first_;
};

uint32_t single_char(const std::string& s, const std::string& where, const char* key) {
  if (!utf8::is_valid(s)) fail("{}: field \"{}\" is not valid UTF-8", where, key);
  auto cps = utf8::decode(s);
  if (cps.size() != 1) fail("{}: field \"{}\" must be one character, got \"{}\"", where, key, s);
  return cps[0];
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(const nlohmann::json& config, const std::string& where,
                                      int depth) {
  if (config.is_null()) return nullptr;
  std::string type = field<std::string>(config, "type", where);
  std::string here = where + "." + type;
  if (type == "Sequence") {
    return std::make_unique<SequenceDecoder>(
        sequence_parts<Decoder>(config, "decoders", where, here, depth, make_decoder));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Replace") {
    return std::make_unique<ReplaceDecoder>(
        pattern_from_json(child(config, "pattern"), here + ".pattern"),
        field<std::string>(config, "content", here));
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    return std::make_unique<StripDecoder>(
        single_char(field<std::string>(config, "content", here), here, "content"),
        field<size_t>(config, "start", here), field<size_t>(config, "stop", here));
  }
  if (type == "Metaspace") {
    bool strip_first = field_or<bool>(config, "add_prefix_space", true, here);
    if (config.contains("prepend_scheme"))
      strip_first = field<std::string>(config, "prepend_scheme", here) != "never";
    return std::make_unique<MetaspaceDecoder>(
        single_char(field<std::string>(config, "replacement", here), here, "replacement"),
        strip_first);
  }
  fail(
      "{}: unsupported decoder type \"{}\" (supported: Sequence, ByteLevel, Replace, ByteFallback, "
      "Fuse, Strip, "
      "Metaspace)",
      where, type);
}

}  // namespace relayllm
