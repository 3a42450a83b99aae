// The bytes each token id adds to the output text, as a grammar engine needs them: byte-level
// vocabularies (GPT-2's byte characters: Llama 3, Qwen, SmolLM2) are mapped back to bytes,
// SentencePiece-style ones (byte fallback: Llama 2, Mistral, GGUF "llama" tokenizers) turn
// "<0xNN>" into its byte and U+2581 into a space. Special tokens and ids the tokenizer does
// not know are "" (a grammar never produces them; stop tokens are handled apart).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "relayllm/tokenizer/tokenizer.h"

namespace relayllm::structured {

enum class VocabEncoding { kRaw, kByteLevel, kByteFallback };

struct TokenTable {
  VocabEncoding encoding = VocabEncoding::kRaw;
  std::vector<std::string> token_bytes;  // vocab_size entries
};

// `vocab_size` is the model's number of logits (>= the tokenizer's vocab; the rest are "").
TokenTable make_token_table(const Tokenizer& tokenizer, int32_t vocab_size);

}  // namespace relayllm::structured
