// The structured-output fields of a request, with OpenAI's and vLLM 0.9.1's names and shapes:
// response_format (text, json_object, json_schema, structural_tag), guided_json, guided_regex,
// guided_choice, guided_grammar, guided_decoding_backend, guided_whitespace_pattern; and
// bad_words, which needs the tokenizer. One place for completions, chat and the CLI's JSONL
// lines. Errors are Error naming the field (the server answers 400).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "relayllm/engine/sampling_params.h"
#include "relayllm/structured/constraint_spec.h"
#include "relayllm/structured/grammar_compiler.h"
#include "relayllm/tokenizer/tokenizer.h"

namespace relayllm {

// The constraint a body asks for, or none (no field, or response_format "text"). More than
// one kind at once, an unknown response_format type, a backend other than xgrammar/auto, or a
// whitespace pattern (xgrammar has none) is an Error naming the field.
std::optional<structured::ConstraintSpec> read_constraint_spec(const nlohmann::json& body);

// Compiles with `compiler` (cached); ConstraintError (naming the field) for a spec that does
// not compile or breaks the limits; Error when the server has no compiler.
std::shared_ptr<const structured::CompiledConstraint> compile_constraint(
    const structured::ConstraintSpec& spec, structured::GrammarCompiler* compiler);

// vLLM's bad_words: each word tokenized as is and, when that gives a different first token
// of the same length, with a leading space (a word at the start and inside the text).
std::vector<std::vector<int32_t>> bad_words_token_ids(const nlohmann::json& value,
                                                      const Tokenizer& tokenizer);

// All of the above into `params` (constraint, bad_words_ids).
void read_structured_output(const nlohmann::json& body, const Tokenizer& tokenizer,
                            structured::GrammarCompiler* compiler, SamplingParams& params);

}  // namespace relayllm
