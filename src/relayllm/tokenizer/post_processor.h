// tokenizer.json "post_processor": the special tokens wrapped around an encoded single sequence.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

namespace relayllm {

class PostProcessor {
 public:
  PostProcessor() = default;
  // Accepts null, TemplateProcessing, ByteLevel (ids unchanged) and Sequence of those.
  PostProcessor(const nlohmann::json& config, const std::string& where);

  // ids with the template's special tokens around them (only called when add_special_tokens).
  std::vector<int32_t> apply(std::vector<int32_t> ids) const;
  // The first special token the single template puts in front of the text, if any.
  std::optional<int32_t> leading_special_id() const;

 private:
  void add(const nlohmann::json& config, const std::string& where, int depth = 0);

  // Template items: ids to insert, or the sequence itself when `is_sequence`.
  struct Item {
    bool is_sequence = false;
    std::vector<int32_t> ids;
  };
  std::optional<std::vector<Item>> template_;
};

}  // namespace relayllm
