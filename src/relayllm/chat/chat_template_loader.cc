#include "relayllm/chat/chat_template_loader.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "relayllm/common/bounded_json.h"
#include "relayllm/common/error.h"

namespace relayllm {
namespace {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read {}", path.string());
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// Special tokens are written either as a string or as an AddedToken object with "content".
std::string token_text(const nlohmann::json& config, const char* field,
                       const std::filesystem::path& file) {
  auto it = config.find(field);
  if (it == config.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  fail("{}: field \"{}\" must be a string or an object with \"content\"", file.string(), field);
}

}  // namespace

ChatTemplateConfig load_chat_template_config(const std::filesystem::path& model_dir) {
  ChatTemplateConfig config;
  std::filesystem::path file = model_dir / "tokenizer_config.json";
  if (std::filesystem::exists(file)) {
    nlohmann::json json = parse_bounded_json(read_file(file), file.string());
    config.bos_token = token_text(json, "bos_token", file);
    config.eos_token = token_text(json, "eos_token", file);
    auto it = json.find("chat_template");
    if (it != json.end() && !it->is_null()) {
      if (it->is_string()) {
        config.source = it->get<std::string>();
      } else if (it->is_array()) {
        for (const auto& entry : *it) {
          if (entry.is_object() && entry.value("name", "") == "default" &&
              entry.contains("template") && entry["template"].is_string()) {
            config.source = entry["template"].get<std::string>();
          }
        }
        if (!config.source)
          fail("{}: chat_template list has no entry named \"default\"", file.string());
      } else {
        fail("{}: field \"chat_template\" must be a string or a list of {{name, template}}",
             file.string());
      }
    }
  }
  std::filesystem::path jinja_file = model_dir / "chat_template.jinja";
  if (std::filesystem::exists(jinja_file)) config.source = read_file(jinja_file);
  return config;
}

}  // namespace relayllm
