// tokenizer.json "normalizer": text rewrites applied to each piece outside the added tokens.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace relayllm {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Input and output are valid UTF-8.
  virtual std::string normalize(std::string text) const = 0;
};

// nullptr for a JSON null. Throws Error naming `where` for unsupported types or bad fields.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& config, const std::string& where,
                                            int depth = 0);

}  // namespace relayllm
