// Runs a parsed template. Every render builds its own scopes and values, so a
// parsed template can be rendered from many threads at once.
#pragma once

#include <string>

#include "relayllm/chat/jinja_ast.h"
#include "relayllm/chat/jinja_lexer.h"
#include "relayllm/chat/jinja_value.h"

namespace relayllm::jinja {

// `variables` are the template's inputs (messages, bos_token, ...); jinja2's and
// Hugging Face's globals come underneath them. Errors are relayllm::Error naming
// the line and column of the failing expression.
std::string render_template(const Body& body, const SourcePositions& positions,
                            const ValueDict& variables);

}  // namespace relayllm::jinja
