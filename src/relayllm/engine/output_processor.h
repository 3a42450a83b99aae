// What a sampled token means for a request's output: detokenizing (incremental),
// EOS and stop tokens, stop strings, the length limit, and so the finish reason;
// and which part of the text can be streamed (a tail that could still grow into a
// stop string is held back). The engine samples; this turns samples into output.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "relayllm/engine/sequence.h"
#include "relayllm/tokenizer/tokenizer.h"

namespace relayllm {

class OutputProcessor {
 public:
  OutputProcessor(const Tokenizer& tokenizer, std::vector<int32_t> eos_token_ids,
                  int32_t max_model_len);

  // Prepares a new sequence's output (its incremental detokenizer).
  void start(Sequence& seq) const;
  // Appends a sampled token to the sequence's output and text. Returns the finish
  // reason when the token ends the request: "stop" (EOS, a stop token or a stop string;
  // stop_reason names the string) or "length".
  std::optional<std::string> append(Sequence& seq, int32_t token) const;
  // The text that can no longer change and was not taken yet: all of it once the
  // sequence finished, otherwise minus a tail that could still become a stop string.
  std::string take_stable_text(Sequence& seq) const;

  const std::vector<int32_t>& eos_token_ids() const { return eos_ids_; }

 private:
  const Tokenizer& tokenizer_;
  std::vector<int32_t> eos_ids_;
  int32_t max_model_len_;
};

}  // namespace relayllm
