// tokenizer.json "decoder": turns a list of token strings back into text.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace relayllm {

class Decoder {
 public:
  virtual ~Decoder() = default;
  // One step of the chain; the final text is the concatenation of what the last step returns.
  // Strings may hold arbitrary bytes until a step that produces text (ByteLevel, ByteFallback).
  virtual std::vector<std::string> decode_chain(std::vector<std::string> tokens) const = 0;
};

// nullptr for a JSON null. Throws Error naming `where` for unsupported types or bad fields.
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& config, const std::string& where,
                                      int depth = 0);

}  // namespace relayllm
