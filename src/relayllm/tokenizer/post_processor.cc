#include "relayllm/tokenizer/post_processor.h"

#include "relayllm/common/json_fields.h"
#include "relayllm/tokenizer/tokenizer_limits.h"

namespace relayllm {

using json_fields::child;
using json_fields::field;
using json_fields::field_or;

PostProcessor::PostProcessor(const nlohmann::json& config, const std::string& where) {
  if (!config.is_null()) add(config, where);
}

void PostProcessor::add(const nlohmann::json& config, const std::string& where, int depth) {
  std::string type = field<std::string>(config, "type", where);
  std::string here = where + "." + type;
  if (type == "Sequence") {
    check_sequence_nesting(depth, here);
    const auto& list = child(config, "processors");
    if (!list.is_array()) fail("{}: field \"processors\" must be an array", here);
    for (size_t i = 0; i < list.size(); ++i)
      add(list[i], fmt::format("{}.processors[{}]", where, i), depth + 1);
    return;
  }
  if (type == "ByteLevel") return;  // only adjusts offsets, which this tokenizer does not track
  if (type != "TemplateProcessing") {
    fail(
        "{}: unsupported post_processor type \"{}\" (supported: TemplateProcessing, ByteLevel, "
        "Sequence)",
        where, type);
  }
  if (template_) fail("{}: more than one TemplateProcessing", where);
  const auto& single = child(config, "single");
  const auto& specials = child(config, "special_tokens");
  if (!single.is_array()) fail("{}: field \"single\" must be an array", here);
  std::vector<Item> items;
  for (size_t i = 0; i < single.size(); ++i) {
    const auto& piece = single[i];
    std::string at = fmt::format("{}.single[{}]", here, i);
    if (piece.contains("Sequence")) {
      items.push_back({true, {}});
    } else if (piece.contains("SpecialToken")) {
      std::string name = field<std::string>(piece["SpecialToken"], "id", at);
      if (!specials.contains(name))
        fail("{}: special token \"{}\" is not in special_tokens", at, name);
      std::vector<int32_t> ids =
          field<std::vector<int32_t>>(specials[name], "ids", here + ".special_tokens." + name);
      for (int32_t id : ids)
        if (id < 0 || id > kMaxTokenId)
          fail("{}.special_tokens.{}: id {} is out of range (0..{})", here, name, id, kMaxTokenId);
      items.push_back({false, std::move(ids)});
    } else {
      fail("{}: expected Sequence or SpecialToken, got {}", at, piece.dump());
    }
  }
  template_ = std::move(items);
}

std::vector<int32_t> PostProcessor::apply(std::vector<int32_t> ids) const {
  if (!template_) return ids;
  std::vector<int32_t> out;
  out.reserve(ids.size() + 4);
  for (const auto& item : *template_) {
    if (item.is_sequence) {
      out.insert(out.end(), ids.begin(), ids.end());
    } else {
      out.insert(out.end(), item.ids.begin(), item.ids.end());
    }
  }
  return out;
}

std::optional<int32_t> PostProcessor::leading_special_id() const {
  if (!template_ || template_->empty()) return std::nullopt;
  const Item& first = template_->front();
  if (first.is_sequence || first.ids.empty()) return std::nullopt;
  return first.ids.front();
}

}  // namespace relayllm
