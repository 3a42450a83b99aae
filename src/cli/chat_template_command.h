// `relayllm render-chat`: renders a model's chat template for JSON lines
// {"messages": [...], "add_generation_prompt": bool, "extra": {...}} on stdin,
// writing {"text": ...} (or {"error": ...}) lines on stdout.
#pragma once

#include <CLI/CLI.hpp>
#include <iosfwd>

#include "relayllm/chat/chat_template.h"

namespace relayllm {

void add_render_chat_command(CLI::App& app, int& exit_code);

// Returns 0 when every line rendered, 2 when any line was malformed or failed to render (the
// other lines are still answered, one output line per non-blank input line).
int run_render_chat(const ChatTemplate& chat_template, const ChatTemplateOptions& defaults,
                    std::istream& in, std::ostream& out);

}  // namespace relayllm
