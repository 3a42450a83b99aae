// JSON schema keywords the grammar engine does not enforce. xgrammar builds a grammar from the
// structural keywords (types, properties, items, enum, const, anyOf, $ref, lengths, bounds,
// patterns) and skips the rest: a schema with `uniqueItems` or `multipleOf` compiled, and the
// model then produced arrays with duplicates and numbers of any value, answered with status
// 200. Such a schema is refused instead, naming the keyword and where it is, so no part of a
// schema is silently ignored.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace relayllm::structured {

// Throws ConstraintError ("field 'F': ...") at the first keyword the grammar cannot enforce:
// not, if/then/else, dependentRequired, dependentSchemas, multipleOf, uniqueItems (true),
// contains, minContains, maxContains, patternProperties, propertyNames, minProperties (> 0),
// maxProperties, and allOf of more than one schema. Only schema positions are read: the values
// of enum, const, default and examples are data, and the names under properties and $defs are
// names.
void check_schema_keywords(const nlohmann::json& schema, const std::string& field);

}  // namespace relayllm::structured
