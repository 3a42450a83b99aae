#include "relayllm/chat/sys_schema.h"

#include <nlohmann/json.hpp>

#include "relayllm/chat/chat_template.h"
#include "relayllm/common/error.h"

namespace relayllm {
namespace {

constexpr std::string_view kSysMarker = "{__SYS_PROMPT}";
constexpr std::string_view kUserMarker = "{__USR_PROMPT}";

std::string replace_all(std::string text, std::string_view from, const std::string& to) {
  for (size_t pos = text.find(from); pos != std::string::npos;
       pos = text.find(from, pos + to.size()))
    text.replace(pos, from.size(), to);
  return text;
}

}  // namespace

SysSchema::SysSchema(const std::string& schema, const std::string& sys_prompt,
                     bool prefix_has_special_tokens)
    : add_special_tokens_(!prefix_has_special_tokens) {
  size_t user = schema.find(kUserMarker);
  RELAYLLM_CHECK(user != std::string::npos, "--sys-schema must contain {} (got \"{}\")",
                 kUserMarker, schema);
  RELAYLLM_CHECK(schema.find(kUserMarker, user + 1) == std::string::npos,
                 "--sys-schema contains {} more than once", kUserMarker);
  prefix_ = replace_all(schema.substr(0, user), kSysMarker, sys_prompt);
  suffix_ = replace_all(schema.substr(user + kUserMarker.size()), kSysMarker, sys_prompt);
}

std::vector<int32_t> SysSchema::prefix_ids(const Tokenizer& tokenizer) const {
  return tokenizer.encode(prefix_, add_special_tokens_);
}

std::vector<int32_t> SysSchema::prompt_ids(const Tokenizer& tokenizer,
                                           const std::string& user_prompt) const {
  std::vector<int32_t> ids = prefix_ids(tokenizer);
  std::vector<int32_t> rest = tokenizer.encode(user_prompt + suffix_, /*add_special_tokens=*/false);
  ids.insert(ids.end(), rest.begin(), rest.end());
  return ids;
}

std::optional<std::string> sys_schema_from_chat_template(const std::string& chat_template,
                                                         const std::string& bos_token,
                                                         const std::string& eos_token) {
  ChatTemplateOptions options;
  options.add_generation_prompt = true;
  options.bos_token = bos_token;
  options.eos_token = eos_token;
  nlohmann::json messages =
      nlohmann::json::array({{{"role", "system"}, {"content", std::string(kSysMarker)}},
                             {{"role", "user"}, {"content", std::string(kUserMarker)}}});
  std::string schema;
  try {
    schema = ChatTemplate(chat_template).render(messages, options);
  } catch (const Error&) {
    return std::nullopt;  // e.g. a template that rejects system messages
  }
  size_t sys = schema.find(kSysMarker), user = schema.find(kUserMarker);
  if (sys == std::string::npos || user == std::string::npos || sys > user ||
      schema.find(kSysMarker, sys + 1) != std::string::npos ||
      schema.find(kUserMarker, user + 1) != std::string::npos)
    return std::nullopt;
  return schema;
}

}  // namespace relayllm
