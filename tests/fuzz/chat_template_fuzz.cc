// Fuzzes the chat template engine two ways. First byte even: the rest is a template's
// source (as a model's tokenizer_config.json may hold), rendered on ordinary messages.
// Odd: the rest is JSON values (messages, or {"messages", "extra"}) as a client sends them,
// rendered by the real templates the project ships.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "fuzz_input.h"
#include "relayllm/chat/chat_template.h"
#include "relayllm/server/api_error.h"
#include "relayllm/server/json_body.h"

namespace {

using nlohmann::ordered_json;

const std::vector<relayllm::ChatTemplate>& real_templates() {
  static const std::vector<relayllm::ChatTemplate> kTemplates = [] {
    std::vector<relayllm::ChatTemplate> out;
    out.emplace_back(relayllm::default_chat_template());
    for (const auto& entry : std::filesystem::directory_iterator(
             std::filesystem::path(RELAYLLM_SOURCE_DIR) / "tests/data/chat_templates")) {
      std::ifstream in(entry.path());
      std::stringstream text;
      text << in.rdbuf();
      out.emplace_back(text.str());
    }
    return out;
  }();
  return kTemplates;
}

relayllm::ChatTemplateOptions options_with(const ordered_json& extra) {
  relayllm::ChatTemplateOptions options;
  options.add_generation_prompt = true;
  options.bos_token = "<s>";
  options.eos_token = "</s>";
  if (extra.is_object()) options.extra = extra;
  return options;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool values = data[0] & 1;
  const std::string_view text = relayllm::fuzz::as_text(data + 1, size - 1);
  relayllm::fuzz::refusal_allowed([&] {
    if (!values) {
      relayllm::ChatTemplate chat{std::string(text)};
      ordered_json messages = ordered_json::array({{{"role", "system"}, {"content", "s"}},
                                                   {{"role", "user"}, {"content", "hi"}},
                                                   {{"role", "assistant"}, {"content", "yo"}},
                                                   {{"role", "user"}, {"content", "more"}}});
      (void)chat.render(messages, options_with(ordered_json::object()));
      return;
    }
    // Parsed as the server parses request bodies.
    nlohmann::json parsed;
    try {
      parsed = relayllm::parse_json_body(text, relayllm::kDefaultMaxJsonDepth);
    } catch (const relayllm::ApiError&) {
      return;
    }
    ordered_json doc = ordered_json(parsed);
    ordered_json messages = doc, extra = ordered_json::object();
    if (doc.is_object()) {
      messages = doc.contains("messages") ? doc["messages"] : ordered_json::array();
      if (doc.contains("extra")) extra = doc["extra"];
    }
    for (const relayllm::ChatTemplate& chat : real_templates())
      relayllm::fuzz::refusal_allowed([&] { (void)chat.render(messages, options_with(extra)); });
  });
  return 0;
}
