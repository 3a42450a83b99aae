#include "relayllm/chat/chat_template.h"

#include <utility>
#include <vector>

#include "relayllm/chat/jinja_interpreter.h"
#include "relayllm/chat/jinja_parser.h"
#include "relayllm/common/error.h"

namespace relayllm {

namespace jinja {
struct ParsedTemplate {
  std::string source;  // newline-normalized
  SourcePositions positions;
  Body body;

  explicit ParsedTemplate(std::string text)
      : source(normalize_newlines(text)), positions(source), body(parse_template(source)) {}
};
}  // namespace jinja

ChatTemplate::ChatTemplate(std::string source)
    : parsed_(std::make_unique<jinja::ParsedTemplate>(std::move(source))) {}
ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

const std::string& ChatTemplate::source() const { return parsed_->source; }

namespace {

// Bounds the depth before the recursive conversion to template values, without recursion.
template <class Json>
void check_depth(const Json& root, const char* what) {
  std::vector<std::pair<const Json*, int>> pending = {{&root, 1}};
  while (!pending.empty()) {
    auto [value, depth] = pending.back();
    pending.pop_back();
    if (depth > jinja::Value::kMaxJsonDepth)
      fail("chat template: {} nested deeper than {} levels", what, jinja::Value::kMaxJsonDepth);
    if (value->is_structured())
      for (const auto& child : *value) pending.push_back({&child, depth + 1});
  }
}

}  // namespace

std::string ChatTemplate::render(const nlohmann::ordered_json& messages,
                                 const ChatTemplateOptions& options) const {
  if (!options.extra.is_object()) fail("chat template: extra variables must be a JSON object");
  check_depth(messages, "messages");
  check_depth(options.extra, "template variables");
  jinja::ValueDict variables;
  // What transformers passes: the messages, tools and documents (none unless given), the
  // generation flag and the special tokens, then the caller's extra keyword arguments.
  variables.set("messages", jinja::Value::from_json(messages));
  variables.set("tools", jinja::Value::none());
  variables.set("documents", jinja::Value::none());
  variables.set("add_generation_prompt", jinja::Value(options.add_generation_prompt));
  // transformers leaves out special tokens the tokenizer does not have.
  if (!options.bos_token.empty()) variables.set("bos_token", jinja::Value(options.bos_token));
  if (!options.eos_token.empty()) variables.set("eos_token", jinja::Value(options.eos_token));
  for (const auto& [key, value] : options.extra.items()) {
    variables.set(key, jinja::Value::from_json(value));
  }
  return jinja::render_template(parsed_->body, parsed_->positions, variables);
}

std::string ChatTemplate::render(const nlohmann::json& messages,
                                 const ChatTemplateOptions& options) const {
  // The conversion to ordered_json copies recursively: bound the depth first.
  check_depth(messages, "messages");
  return render(nlohmann::ordered_json(messages), options);
}

const char* default_chat_template() {
  return "{% for message in messages %}"
         "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' "
         "}}"
         "{% endfor %}"
         "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
}

}  // namespace relayllm
