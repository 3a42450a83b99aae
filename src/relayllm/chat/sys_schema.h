// The system-prompt schema of the --sys-prompt/--sys-schema options: a template
// with {__SYS_PROMPT} and {__USR_PROMPT}. Everything before {__USR_PROMPT} (with
// the system prompt filled in) is the shared prefix; the rest wraps each user
// prompt. Prompts are tokenized in two pieces, prefix with special tokens and
// user part without, whether relay attention is on or off, so relay never
// changes the tokens a request sees.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "relayllm/tokenizer/tokenizer.h"

namespace relayllm {

inline constexpr const char* kDefaultSysSchema = "{__SYS_PROMPT}{__USR_PROMPT}";

class SysSchema {
 public:
  // Throws Error when the schema lacks {__USR_PROMPT} or has it twice. A schema made
  // from a chat template already spells out its special tokens, so its prefix is
  // encoded without adding more (prefix_has_special_tokens).
  SysSchema(const std::string& schema, const std::string& sys_prompt,
            bool prefix_has_special_tokens = false);

  const std::string& prefix_text() const { return prefix_; }
  const std::string& suffix_text() const { return suffix_; }
  std::vector<int32_t> prefix_ids(const Tokenizer& tokenizer) const;
  // prefix_ids followed by the ids of user_prompt + suffix.
  std::vector<int32_t> prompt_ids(const Tokenizer& tokenizer, const std::string& user_prompt) const;

 private:
  std::string prefix_;
  std::string suffix_;
  bool add_special_tokens_ = true;
};

// A schema in the syntax above for a model's chat template: the template rendered for
// [system, user] turns whose contents are the two markers, with the generation prompt.
// nullopt when the template does not place both contents verbatim, in order, once.
std::optional<std::string> sys_schema_from_chat_template(const std::string& chat_template,
                                                         const std::string& bos_token,
                                                         const std::string& eos_token);

}  // namespace relayllm
