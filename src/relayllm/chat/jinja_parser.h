// Parses template tokens into statements, with jinja2's operator precedence.
// Syntax errors name line and column and what was expected.
#pragma once

#include <string_view>

#include "relayllm/chat/jinja_ast.h"
#include "relayllm/chat/jinja_lexer.h"

namespace relayllm::jinja {

// `source` must already be newline-normalized (positions in errors refer to it).
Body parse_template(std::string_view source);

}  // namespace relayllm::jinja
