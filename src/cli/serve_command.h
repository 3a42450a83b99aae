#pragma once

#include <CLI/CLI.hpp>

namespace relayllm {

// `relayllm serve`: the OpenAI-compatible HTTP server.
void add_serve_command(CLI::App& app, int& exit_code);

}  // namespace relayllm
