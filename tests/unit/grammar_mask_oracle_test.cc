// The token masks of compiled grammars against an oracle: at every position of a valid output,
// a token is allowed by the mask exactly when the matcher accepts it. Checked on real
// vocabularies (the default model's byte-level BPE, Llama 2's byte-fallback SentencePiece),
// whose multi-byte tokens share first bytes in long runs: the compiler rejects such runs in
// bulk (cmake/xgrammar/bulk_reject.inc), and this is the test that the masks stay exact.
#include <gtest/gtest.h>

#include <filesystem>
#include <optional>

#include "relayllm/formats/gguf_file.h"
#include "relayllm/serving/default_model.h"
#include "relayllm/structured/grammar_compiler.h"
#include "relayllm/structured/grammar_matcher.h"
#include "relayllm/structured/token_table.h"
#include "relayllm/tokenizer/gguf_tokenizer.h"

namespace relayllm {
namespace {

using structured::ConstraintKind;
using structured::ConstraintSpec;

struct Vocabulary {
  std::string name;
  Tokenizer tokenizer;
};

std::vector<Vocabulary> vocabularies() {
  std::vector<Vocabulary> out;
  if (auto gguf = find_default_gguf())
    out.push_back({"smollm2", load_gguf_tokenizer(GgufFile(*gguf))});
  const std::filesystem::path llama2 = RELAYLLM_SHARED_DIR "/tokenizers/llama2";
  if (std::filesystem::exists(llama2 / "tokenizer.json"))
    out.push_back({"llama2", Tokenizer::from_files(llama2 / "tokenizer.json",
                                                   llama2 / "tokenizer_config.json")});
  return out;
}

// Walks `text` through a matcher of `spec`, at each position taking the longest allowed token
// that spells the text on (the tokenizer's own encoding may start with a space a grammar does
// not allow, as SentencePiece's does); at each position, and after the text, compares the mask
// with what the matcher accepts over the whole vocabulary.
void check_masks(const Vocabulary& v, const ConstraintSpec& spec, const std::string& text) {
  const int32_t vocab = v.tokenizer.vocab_size();
  std::vector<int32_t> stops;
  if (auto eos = v.tokenizer.eos_token_id()) stops.push_back(*eos);
  ASSERT_FALSE(stops.empty()) << v.name;
  const std::vector<std::string> pieces =
      structured::make_token_table(v.tokenizer, vocab).token_bytes;
  structured::GrammarCompiler compiler(v.tokenizer, vocab, stops);
  structured::GrammarMatcher m(compiler.compile(spec), 1);
  std::vector<int32_t> mask(structured::bitmask_words(vocab));
  int32_t positions = 0, multi_byte = 0;
  for (size_t at = 0;; ++positions) {
    m.fill_next_token_bitmask(mask);
    int32_t mismatches = 0, best = -1;
    for (int32_t id = 0; id < vocab; ++id) {
      const bool accepted = m.accept_token(id);
      if (accepted) m.rollback(1);
      const bool allowed = structured::bitmask_allows(mask, id);
      if (accepted != allowed && ++mismatches <= 3)
        ADD_FAILURE() << v.name << " " << text << " at byte " << at << ": token " << id << " '"
                      << pieces[size_t(id)] << "' accepted " << accepted << ", mask " << allowed;
      const std::string& p = pieces[size_t(id)];
      if (allowed && !p.empty() && text.compare(at, p.size(), p) == 0 &&
          (best < 0 || p.size() > pieces[size_t(best)].size()))
        best = id;
    }
    ASSERT_EQ(mismatches, 0) << v.name << " at byte " << at;
    if (at == text.size()) break;
    ASSERT_GE(best, 0) << v.name << ": no allowed token spells '" << text.substr(at) << "'";
    ASSERT_TRUE(m.accept_token(best)) << v.name << " at byte " << at;
    multi_byte += pieces[size_t(best)].size() > 1;
    at += pieces[size_t(best)].size();
  }
  // After the text only the stop tokens are allowed; the walk took multi-byte tokens.
  EXPECT_TRUE(structured::bitmask_allows(mask, stops[0])) << v.name;
  EXPECT_GT(multi_byte, 0) << v.name << " over " << positions << " positions";
}

TEST(GrammarMaskOracle, ToolSchemaMasksEqualWhatTheMatcherAccepts) {
  auto vocabs = vocabularies();
  if (vocabs.empty()) GTEST_SKIP() << "no real vocabulary (default model, ../shared tokenizers)";
  ConstraintSpec schema;
  schema.kind = ConstraintKind::kJsonSchema;
  schema.text = R"({"type": "object", "properties": {
      "location": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]},
      "days": {"type": "integer", "minimum": 1, "maximum": 14},
      "include": {"type": "array", "items": {"enum": ["wind", "rain", "uv", "humidity"]}}},
      "required": ["location", "unit"]})";
  ConstraintSpec regex;
  regex.kind = ConstraintKind::kRegex;
  regex.text = R"([A-Z][a-z]+ (is|was) [0-9]{1,3}(\.[0-9])? (km|miles)\.)";
  // A rule that can end where its next byte is rejected (a star at the end of `word`): tokens
  // that start with ", " are then for the parent rule to judge, never rejected in bulk.
  ConstraintSpec ebnf;
  ebnf.kind = ConstraintKind::kEbnf;
  ebnf.text = R"(root ::= word ", " word "." [ a-z]*
word ::= [a-zA-Z]*)";
  for (const Vocabulary& v : vocabs) {
    check_masks(v, ebnf, "Hello, world. and so on");
    check_masks(v, schema,
                R"({"location": "Paris, \"France\" \u00e9t\u00e9", "unit": "celsius", )"
                R"("days": 12, "include": ["wind", "uv"]})");
    check_masks(v, regex, "Lyon is 465.5 km.");
  }
}

}  // namespace
}  // namespace relayllm
