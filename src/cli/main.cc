// The `relayllm` command. Every failure reaches the user as one line on stderr
// and a non-zero exit code.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "chat_template_command.h"
#include "generate_command.h"
#include "relayllm/common/error.h"
#include "relayllm/common/version.h"
#include "relayllm/model/model_loader.h"
#include "serve_command.h"
#include "tokenize_command.h"
#include "vllm_flags.h"

namespace {

void add_tokenize_command(CLI::App& app, int& exit_code) {
  auto model = std::make_shared<std::string>();
  auto no_special = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand(
      "tokenize", "Read {\"text\": ...} lines on stdin, write {\"ids\": [...]} lines on stdout");
  cmd->add_option("--model", *model,
                  "Model folder holding tokenizer.json (and tokenizer_config.json)")
      ->required();
  cmd->add_flag("--no-special", *no_special, "Do not add special tokens such as BOS");
  cmd->callback([model, no_special, &exit_code] {
    relayllm::Tokenizer tokenizer = relayllm::load_tokenizer(*model);
    exit_code = relayllm::run_tokenize(tokenizer, !*no_special, std::cin, std::cout);
  });
}

}  // namespace

int main(int argc, char** argv) {
  // Logs go to stderr so stdout carries only results.
  spdlog::set_default_logger(spdlog::stderr_color_mt("relayllm"));
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");

  CLI::App app{"relayllm: LLM inference with relay attention"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("relayllm ") + relayllm::kVersion);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace | debug | info | warn | error")
      ->capture_default_str();
  app.parse_complete_callback([&] { spdlog::set_level(spdlog::level::from_str(log_level)); });
  int exit_code = 0;
  relayllm::add_generate_command(app, exit_code);
  add_tokenize_command(app, exit_code);
  relayllm::add_render_chat_command(app, exit_code);
  relayllm::add_serve_command(app, exit_code);
  try {
    // vLLM's -tp/-pp are multi-letter short flags, which CLI11 cannot declare.
    std::vector<std::string> args = relayllm::expand_vllm_short_flags(argc, argv);
    std::vector<const char*> ptrs;
    for (const std::string& a : args) ptrs.push_back(a.c_str());
    app.parse(int(ptrs.size()), ptrs.data());
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const relayllm::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
  return exit_code;
}
