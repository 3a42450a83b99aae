// The checks of ConstraintLimits, run on a spec's texts before xgrammar parses them: size,
// nesting (its parsers recurse) and repetition counts (minItems, {n,m}: they expand into
// copies of a rule). Each throws ConstraintError naming the field and the limit.
#pragma once

#include <string>

#include "relayllm/structured/constraint_spec.h"

namespace relayllm::structured {

void check_constraint_limits(const ConstraintSpec& spec, const ConstraintLimits& limits);

// Parts, exposed for tests.
void check_json_schema_limits(const std::string& schema, const std::string& field,
                              const ConstraintLimits& limits);
void check_regex_limits(const std::string& regex, const std::string& field,
                        const ConstraintLimits& limits);
void check_ebnf_limits(const std::string& ebnf, const std::string& field,
                       const ConstraintLimits& limits);

}  // namespace relayllm::structured
