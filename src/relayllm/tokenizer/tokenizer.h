// Text <-> token ids for Hugging Face tokenizer.json files (byte-level BPE as in Llama 3 and Qwen,
// SentencePiece-style BPE with byte fallback as in Llama 2 and Mistral), matching the ids of the
// reference `tokenizers` library exactly.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace relayllm {

class Tokenizer {
 public:
  // tokenizer_config may be a missing path: then defaults. Throws Error naming the file and field.
  static Tokenizer from_files(const std::filesystem::path& tokenizer_json,
                              const std::filesystem::path& tokenizer_config_json);
  // tokenizer_config may be null or an empty object.
  static Tokenizer from_json(const nlohmann::json& tokenizer,
                             const nlohmann::json& tokenizer_config);
  // A byte-level tokenizer with 256 byte tokens (id = byte value) and no merges plus "<s>" (256,
  // bos) and "</s>" (257, eos); encode adds "<s>" when add_special_tokens. Vocab size 258.
  static Tokenizer make_byte_tokenizer();

  // Invalid UTF-8 in `text` is replaced by U+FFFD first.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const;
  // Unknown ids are skipped, as in the reference.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const;

  int32_t vocab_size() const;  // max id + 1 over vocab and added tokens
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // Throws Error for an id that is neither in the vocab nor an added token.
  std::string id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;
  std::optional<int32_t> bos_token_id()
      const;  // tokenizer_config bos_token, else the post_processor's first special
  std::optional<int32_t> eos_token_id() const;  // tokenizer_config eos_token
  const std::string& chat_template() const;     // tokenizer_config "chat_template", "" if none

  // tokenizer_config "bos_token"/"eos_token" text ("" if none), for chat templates.
  const std::string& bos_token() const;
  const std::string& eos_token() const;

 private:
  struct Impl;
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// Turns a growing list of generated ids into text pieces for streaming. Never emits a partial UTF-8
// sequence: text whose decode still ends in U+FFFD (an unfinished character) is held back until a
// later id completes it, or until flush().
//
// The prompt's last few ids are decoded with the generated ones as context, so tokenizers that
// strip the first token's leading space (SentencePiece) give the first generated word its space.
// With an empty prompt the concatenation of all pieces equals tokenizer.decode(generated_ids,
// skip_special); with a prompt it equals what decode(prompt_ids + generated_ids) adds after
// decode(prompt_ids). One exception, for invalid UTF-8 only: byte fallback decodes a whole run of
// byte tokens that is not valid UTF-8 as one U+FFFD per byte, even bytes of a character that was
// complete (and already streamed) before a bad byte followed; the stream keeps that character.
class IncrementalDetokenizer {
 public:
  IncrementalDetokenizer(const Tokenizer& tokenizer, std::span<const int32_t> prompt_ids,
                         bool skip_special_tokens);

  std::string push(int32_t id);  // new text made final by this id (maybe "")
  std::string flush();           // whatever is held back, with invalid bytes as U+FFFD

 private:
  std::string advance(bool final);

  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;  // the prompt's tail (context) followed by the generated ids
  size_t prefix_offset_ = 0;  // start of the decode window
  size_t read_offset_ = 0;    // ids before this are already emitted
};

}  // namespace relayllm
