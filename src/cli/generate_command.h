#pragma once

#include <CLI/CLI.hpp>

namespace relayllm {

// `relayllm generate`: offline batch generation, one JSON line per prompt on stdout.
void add_generate_command(CLI::App& app, int& exit_code);

}  // namespace relayllm
