#include "relayllm/structured/constraint_spec.h"

#include <fmt/format.h>

namespace relayllm::structured {

std::string ConstraintSpec::cache_key() const {
  // Lengths before texts keep two different specs from ever spelling the same key.
  std::string key =
      fmt::format("{}|{}|{}|{}:", int(kind), int(any_whitespace), int(strict), text.size());
  key += text;
  for (const std::string& c : choices) key += fmt::format("|c{}:{}", c.size(), c);
  for (const StructuralTag& t : tags)
    key += fmt::format("|t{}:{}{}:{}{}:{}", t.begin.size(), t.begin, t.schema.size(), t.schema,
                       t.end.size(), t.end);
  for (const std::string& t : triggers) key += fmt::format("|g{}:{}", t.size(), t);
  return key;
}

}  // namespace relayllm::structured
