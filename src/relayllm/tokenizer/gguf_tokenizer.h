// A Tokenizer from the tokenizer.ggml.* metadata of a GGUF file. The metadata is turned
// into the equivalent tokenizer.json (and tokenizer_config) and built by
// Tokenizer::from_json, so GGUF and HF models share one tokenizer implementation.
//   gpt2:  byte-level BPE with the file's merges; the pre-tokenizer split is chosen by
//          tokenizer.ggml.pre as llama.cpp does (gpt2 regex, digits split, llama3, qwen2).
//   llama: SentencePiece-style BPE with byte fallback; merges are derived from the token
//          scores (a pair merges with the priority of the token it forms).
// Control tokens (token_type 3) become special added tokens, user-defined ones (4) plain
// added tokens. bos/eos come from tokenizer.ggml.{bos,eos}_token_id, the BOS is added when
// tokenizer.ggml.add_bos_token says so, and the chat template is tokenizer.chat_template.
#pragma once

#include <nlohmann/json.hpp>

#include "relayllm/formats/gguf_file.h"
#include "relayllm/tokenizer/tokenizer.h"

namespace relayllm {

struct GgufTokenizerJson {
  nlohmann::json tokenizer;  // the tokenizer.json equivalent
  nlohmann::json config;     // the tokenizer_config.json equivalent
};

// Throws Error naming the file and the metadata key for a missing or inconsistent field or
// an unsupported tokenizer model / pre-tokenizer.
GgufTokenizerJson gguf_tokenizer_json(const GgufFile& file);
Tokenizer load_gguf_tokenizer(const GgufFile& file);

}  // namespace relayllm
