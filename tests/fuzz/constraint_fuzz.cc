// Fuzzes structured-output constraints, from the text a client sends to the token masks: the
// limits, xgrammar's parsers (JSON schema, regex, EBNF, structural tags) and its matcher,
// which must refuse what it cannot run (left recursion) instead of overflowing the stack.
// The first byte picks the kind, the rest is its text; a compiled constraint is then walked
// for a few tokens (the first allowed token, then the last).
#include <set>
#include <string>

#include "fuzz_input.h"
#include "relayllm/structured/constraint_spec.h"
#include "relayllm/structured/grammar_compiler.h"
#include "relayllm/structured/grammar_matcher.h"
#include "relayllm/tokenizer/tokenizer.h"

namespace {

using namespace relayllm::structured;

constexpr int32_t kVocab = 258;  // 256 bytes, BOS, EOS (Tokenizer::make_byte_tokenizer)
constexpr int32_t kEos = 257;

GrammarCompiler& compiler() {
  static GrammarCompiler c(relayllm::Tokenizer::make_byte_tokenizer(), kVocab, {kEos});
  return c;
}

ConstraintSpec spec_from(const uint8_t* data, size_t size) {
  ConstraintSpec spec;
  spec.field = "fuzz";
  const uint8_t selector = size ? data[0] : 0;
  std::string text(reinterpret_cast<const char*>(data) + (size ? 1 : 0), size ? size - 1 : 0);
  spec.any_whitespace = selector & 0x80;
  switch (selector % 5) {
    case 0:
      spec.kind = ConstraintKind::kJsonSchema;
      spec.text = std::move(text);
      break;
    case 1:
      spec.kind = ConstraintKind::kRegex;
      spec.text = std::move(text);
      break;
    case 2:
      spec.kind = ConstraintKind::kEbnf;
      spec.text = std::move(text);
      break;
    case 3: {  // choices separated by newlines
      spec.kind = ConstraintKind::kChoice;
      size_t start = 0;
      for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1)
        spec.choices.push_back(text.substr(start, nl - start));
      spec.choices.push_back(text.substr(start));
      break;
    }
    default: {  // one structural tag: begin, end and trigger on the first line, schema after
      spec.kind = ConstraintKind::kStructuralTag;
      const size_t nl = text.find('\n');
      const std::string tag = text.substr(0, nl);
      spec.tags.push_back({"<" + tag + ">", nl == std::string::npos ? "{}" : text.substr(nl + 1),
                           "</" + tag + ">"});
      spec.triggers.push_back("<" + tag);
      break;
    }
  }
  return spec;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)relayllm::fuzz::kQuietLogs;
  ConstraintSpec spec = spec_from(data, size);
  std::shared_ptr<const CompiledConstraint> compiled;
  try {
    compiled = compiler().compile(spec);  // the limits first, as for a request
  } catch (const relayllm::Error&) {
    return 0;  // refused with a message: fine
  }
  GrammarMatcher matcher(compiled);
  std::vector<int32_t> mask(bitmask_words(kVocab));
  for (int step = 0; step < 6 && !matcher.is_terminated(); ++step) {
    matcher.fill_next_token_bitmask(mask);
    int32_t pick = -1;
    for (int32_t id = 0; id < kVocab; ++id)
      if (bitmask_allows(mask, id) && (pick < 0 || step % 2)) pick = id;
    if (pick < 0 || !matcher.accept_token(pick)) break;
  }
  return 0;
}
