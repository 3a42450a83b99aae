// Hugging Face chat templates (the `chat_template` of tokenizer_config.json),
// rendered the way transformers' apply_chat_template renders them: jinja2 with
// trim_blocks, lstrip_blocks, loop controls, a `raise_exception` global, a
// `strftime_now` global and a `tojson` filter that keeps non-ASCII text as is.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace relayllm {

namespace jinja {
struct ParsedTemplate;
}

struct ChatTemplateOptions {
  bool add_generation_prompt = false;
  std::string bos_token, eos_token;  // left undefined in the template when empty
  // More template variables, e.g. tools, documents, enable_thinking, date_string. Ordered, so
  // that `tools | tojson` lists keys in the order the caller gave them, as Python would.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
};

class ChatTemplate {
 public:
  // Parses once; Error naming line and column on a syntax error.
  explicit ChatTemplate(std::string source);
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  // Thread-safe. Error (with the template position) when the template fails, and with the
  // template's own message when it calls raise_exception.
  std::string render(const nlohmann::ordered_json& messages,
                     const ChatTemplateOptions& options) const;
  // The same with an unordered document (object keys then come in sorted order).
  std::string render(const nlohmann::json& messages, const ChatTemplateOptions& options) const;

  const std::string& source() const;

 private:
  std::unique_ptr<jinja::ParsedTemplate> parsed_;
};

// The template used when a tokenizer has none: ChatML (<|im_start|>role\n...<|im_end|>\n), the
// format transformers used as its class-level default.
const char* default_chat_template();

}  // namespace relayllm
