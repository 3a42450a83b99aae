#include "relayllm/tokenizer/normalizer.h"

#include <vector>

#include "relayllm/common/json_fields.h"
#include "relayllm/common/utf8.h"
#include "relayllm/tokenizer/regex.h"
#include "relayllm/tokenizer/sequence_parts.h"
#include "relayllm/tokenizer/tokenizer_limits.h"
#include "relayllm/tokenizer/unicode_nfc.h"

namespace relayllm {

using json_fields::child;
using json_fields::field;
using json_fields::field_or;
namespace {

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  std::string normalize(std::string text) const override {
    for (const auto& part : parts_) text = part->normalize(std::move(text));
    return text;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

class NfcNormalizer final : public Normalizer {
 public:
  std::string normalize(std::string text) const override { return to_nfc(text); }
};

class NfdNormalizer final : public Normalizer {
 public:
  std::string normalize(std::string text) const override { return to_nfd(text); }
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  // An empty piece stays empty, so text that is all added tokens gains nothing.
  std::string normalize(std::string text) const override {
    return text.empty() ? text : prefix_ + text;
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(Regex pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::string normalize(std::string text) const override {
    return pattern_.replace_all(text, content_);
  }

 private:
  Regex pattern_;
  std::string content_;
};

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  std::string normalize(std::string text) const override {
    std::vector<uint32_t> cps = utf8::decode(text);
    size_t begin = 0, end = cps.size();
    if (left_)
      while (begin < end && utf8::is_whitespace(cps[begin])) ++begin;
    if (right_)
      while (end > begin && utf8::is_whitespace(cps[end - 1])) --end;
    return utf8::encode(std::vector<uint32_t>(cps.begin() + begin, cps.begin() + end));
  }

 private:
  bool left_, right_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& config, const std::string& where,
                                            int depth) {
  if (config.is_null()) return nullptr;
  std::string type = field<std::string>(config, "type", where);
  std::string here = where + "." + type;
  if (type == "Sequence") {
    return std::make_unique<SequenceNormalizer>(
        sequence_parts<Normalizer>(config, "normalizers", where, here, depth, make_normalizer));
  }
  if (type == "NFC") return std::make_unique<NfcNormalizer>();
  if (type == "NFD") return std::make_unique<NfdNormalizer>();
  if (type == "Prepend")
    return std::make_unique<PrependNormalizer>(field<std::string>(config, "prepend", here));
  if (type == "Replace") {
    return std::make_unique<ReplaceNormalizer>(
        pattern_from_json(child(config, "pattern"), here + ".pattern"),
        field<std::string>(config, "content", here));
  }
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(field_or<bool>(config, "strip_left", true, here),
                                             field_or<bool>(config, "strip_right", true, here));
  }
  fail(
      "{}: unsupported normalizer type \"{}\" (supported: Sequence, NFC, NFD, Prepend, Replace, "
      "Strip)",
      where, type);
}

}  // namespace relayllm
