// Finds a model folder's chat template and the special tokens it refers to, as
// transformers does: chat_template.jinja when present, else the
// `chat_template` field of tokenizer_config.json (a string, or a list of
// {name, template} from which "default" is taken).
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace relayllm {

struct ChatTemplateConfig {
  std::optional<std::string> source;  // none when the folder has no template
  std::string bos_token, eos_token;   // empty when not set
};

// Error naming the file when tokenizer_config.json exists but is not valid JSON or has a
// field of the wrong type. A folder without tokenizer_config.json gives an empty config.
ChatTemplateConfig load_chat_template_config(const std::filesystem::path& model_dir);

}  // namespace relayllm
