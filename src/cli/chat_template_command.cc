#include "chat_template_command.h"

#include <fmt/format.h>

#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "relayllm/chat/chat_template_loader.h"
#include "relayllm/common/error.h"
#include "relayllm/common/json_line.h"

namespace relayllm {

int run_render_chat(const ChatTemplate& chat_template, const ChatTemplateOptions& defaults,
                    std::istream& in, std::ostream& out) {
  int status = 0;
  std::string line;
  size_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::ordered_json reply;
    try {
      nlohmann::ordered_json request;
      try {
        request = nlohmann::ordered_json::parse(line);
      } catch (const nlohmann::ordered_json::exception& e) {
        fail("input line {}: invalid JSON: {}", line_number, e.what());
      }
      if (!request.is_object() || !request.contains("messages") ||
          !request["messages"].is_array()) {
        fail("input line {}: expected an object with an array field \"messages\"", line_number);
      }
      ChatTemplateOptions options = defaults;
      if (request.contains("add_generation_prompt")) {
        if (!request["add_generation_prompt"].is_boolean()) {
          fail("input line {}: \"add_generation_prompt\" must be true or false", line_number);
        }
        options.add_generation_prompt = request["add_generation_prompt"].get<bool>();
      }
      if (request.contains("extra")) {
        if (!request["extra"].is_object())
          fail("input line {}: \"extra\" must be an object", line_number);
        for (const auto& [key, value] : request["extra"].items()) options.extra[key] = value;
      }
      reply["text"] = chat_template.render(request["messages"], options);
    } catch (const Error& e) {
      status = 2;
      reply = nlohmann::ordered_json{{"error", e.what()}};
    }
    out << json_line(reply) << '\n';
  }
  out.flush();
  return status;
}

void add_render_chat_command(CLI::App& app, int& exit_code) {
  struct Flags {
    std::string model;
    std::string chat_template;
    bool add_generation_prompt = false;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("render-chat",
                                     "Render a chat template: {\"messages\": [...], "
                                     "\"add_generation_prompt\": bool, \"extra\": {...}} lines "
                                     "on stdin, {\"text\": ...} lines on stdout");
  cmd->add_option("--model", flags->model, "Model folder holding tokenizer_config.json")
      ->required();
  cmd->add_option("--chat-template", flags->chat_template,
                  "Jinja file to use instead of the model's chat template");
  cmd->add_flag("--add-generation-prompt", flags->add_generation_prompt,
                "Default for lines that do not say add_generation_prompt");
  cmd->callback([flags, &exit_code] {
    ChatTemplateConfig config = load_chat_template_config(flags->model);
    std::string source;
    if (!flags->chat_template.empty()) {
      std::ifstream file(flags->chat_template, std::ios::binary);
      if (!file) fail("cannot read chat template file {}", flags->chat_template);
      std::stringstream buffer;
      buffer << file.rdbuf();
      source = buffer.str();
    } else {
      source = config.source.value_or(default_chat_template());
    }
    ChatTemplate chat_template(std::move(source));
    ChatTemplateOptions defaults;
    defaults.add_generation_prompt = flags->add_generation_prompt;
    defaults.bos_token = config.bos_token;
    defaults.eos_token = config.eos_token;
    exit_code = run_render_chat(chat_template, defaults, std::cin, std::cout);
  });
}

}  // namespace relayllm
