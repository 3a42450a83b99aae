// Fuzzes the JSON files of a model folder: config.json, generation_config.json,
// tokenizer.json and tokenizer_config.json (with its chat template), from parse to a
// working tokenizer. The first byte picks the file, the rest is its text.
#include <nlohmann/json.hpp>

#include "fuzz_input.h"
#include "relayllm/chat/chat_template.h"
#include "relayllm/common/bounded_json.h"
#include "relayllm/model/generation_config.h"
#include "relayllm/model/model_config.h"
#include "relayllm/model/model_limits.h"
#include "relayllm/tokenizer/tokenizer.h"

namespace {

using nlohmann::json;
using relayllm::Tokenizer;

// A byte-level BPE tokenizer.json, small enough to build on every input.
const json& byte_tokenizer_json() {
  static const json kTokenizer = [] {
    json vocab = json::object();
    // GPT-2's byte -> printable character map for the ASCII letters is the identity.
    for (char c = 'a'; c <= 'z'; ++c) vocab[std::string(1, c)] = int(c - 'a');
    vocab["ab"] = 26;
    return json{
        {"added_tokens",
         {{{"id", 27}, {"content", "<s>"}, {"special", true}},
          {{"id", 28}, {"content", "</s>"}, {"special", true}}}},
        {"normalizer", nullptr},
        {"pre_tokenizer", nullptr},
        {"decoder", nullptr},
        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b"}}}},
    };
  }();
  return kTokenizer;
}

void exercise(const Tokenizer& tokenizer) {
  std::vector<int32_t> ids = tokenizer.encode("ab <s>hello\xc3\xa9 world\n", true);
  (void)tokenizer.decode(ids, false);
  (void)tokenizer.decode(ids, true);
  if (!tokenizer.chat_template().empty()) {
    relayllm::ChatTemplate chat(tokenizer.chat_template());
    relayllm::ChatTemplateOptions options;
    options.add_generation_prompt = true;
    options.bos_token = tokenizer.bos_token();
    options.eos_token = tokenizer.eos_token();
    json messages = json::array({{{"role", "system"}, {"content", "s"}},
                                 {{"role", "user"}, {"content", "hi"}},
                                 {{"role", "assistant"}, {"content", "yo"}}});
    (void)chat.render(messages, options);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int file = data[0] % 4;
  const std::string_view text = relayllm::fuzz::as_text(data + 1, size - 1);
  relayllm::fuzz::refusal_allowed([&] {
    json j = relayllm::parse_bounded_json(text, "fuzz.json");
    switch (file) {
      case 0: {
        relayllm::ModelConfig c = relayllm::parse_model_config_json(j, "config.json");
        (void)relayllm::model_host_bytes(c, c.max_position_embeddings);
        (void)relayllm::rope_inverse_frequencies(c, c.max_position_embeddings + 1);
        break;
      }
      case 1:
        (void)relayllm::parse_generation_config_json(j, "generation_config.json");
        break;
      case 2:
        exercise(Tokenizer::from_json(j, json::object()));
        break;
      case 3:
        exercise(Tokenizer::from_json(byte_tokenizer_json(), j));
        break;
    }
  });
  return 0;
}
