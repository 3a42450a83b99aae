// tokenizer.json "pre_tokenizer": splits normalized text into words that BPE encodes separately.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace relayllm {

struct TextPiece {
  std::string text;
  // True when the piece begins at offset 0 of the original text (Metaspace's "first" scheme).
  bool at_text_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Rewrites and splits every piece in place; empty pieces are dropped.
  virtual void pre_tokenize(std::vector<TextPiece>& pieces) const = 0;
};

// nullptr for a JSON null. Throws Error naming `where` for unsupported types or bad fields.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& config,
                                                 const std::string& where, int depth = 0);

}  // namespace relayllm
