// The grammar layer (structured/): limits, the token table, the compiler's cache and errors, the
// matcher's masks; the sampler's restrictions; the engine finishing constrained requests.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <regex>
#include <set>
#include <string>

#include "relayllm/engine/sampler.h"
#include "relayllm/structured/constraint_limits.h"
#include "relayllm/structured/grammar_compiler.h"
#include "relayllm/structured/grammar_matcher.h"
#include "relayllm/structured/token_table.h"
#include "tiny_models.h"

namespace relayllm {
namespace {

using structured::ConstraintError;
using structured::ConstraintKind;
using structured::ConstraintSpec;
using structured::GrammarCompiler;
using structured::GrammarMatcher;

constexpr int32_t kEos = 257;  // make_byte_tokenizer's "</s>"

ConstraintSpec spec_of(ConstraintKind kind, std::string text, std::string field = "f") {
  ConstraintSpec s;
  s.kind = kind;
  s.text = std::move(text);
  s.field = std::move(field);
  return s;
}

GrammarCompiler byte_compiler() {
  return GrammarCompiler(Tokenizer::make_byte_tokenizer(), 258, {kEos});
}

std::set<int32_t> allowed(GrammarMatcher& m) {
  std::vector<int32_t> mask(structured::bitmask_words(m.vocab_size()));
  m.fill_next_token_bitmask(mask);
  std::set<int32_t> out;
  for (int32_t id = 0; id < m.vocab_size(); ++id)
    if (structured::bitmask_allows(mask, id)) out.insert(id);
  return out;
}

TEST(StructuredTokenTable, ByteTokenizerMapsEveryByteAndBlanksSpecials) {
  Tokenizer t = Tokenizer::make_byte_tokenizer();
  structured::TokenTable table = structured::make_token_table(t, 300);
  EXPECT_EQ(table.encoding, structured::VocabEncoding::kByteLevel);
  ASSERT_EQ(table.token_bytes.size(), 300u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(table.token_bytes[b], std::string(1, char(b))) << b;
  EXPECT_EQ(table.token_bytes[256], "");  // <s>
  EXPECT_EQ(table.token_bytes[257], "");  // </s>
  EXPECT_EQ(table.token_bytes[299], "");  // beyond the tokenizer
}

TEST(StructuredTokenTable, RealTokenizersDecodeTheirTokens) {
  // Every non-special token's bytes, joined, decode to what the tokenizer itself decodes.
  const std::filesystem::path shared = RELAYLLM_SHARED_DIR "/tokenizers";
  int checked = 0;
  for (const char* name : {"llama2", "llama3", "qwen3"}) {
    const auto dir = shared / name;
    if (!std::filesystem::exists(dir / "tokenizer.json")) continue;
    Tokenizer t = Tokenizer::from_files(dir / "tokenizer.json", dir / "tokenizer_config.json");
    structured::TokenTable table = structured::make_token_table(t, t.vocab_size());
    EXPECT_NE(table.encoding, structured::VocabEncoding::kRaw) << name;
    std::vector<int32_t> ids =
        t.encode("Hello, world!\n  {\"a\": [1, 2]} \xc3\xa9t\xc3\xa9", false);
    std::string joined;
    for (int32_t id : ids) joined += table.token_bytes[size_t(id)];
    // SentencePiece decoders drop the first space their normalizer added.
    std::string decoded = t.decode(ids, true);
    if (!joined.empty() && joined[0] == ' ' && decoded[0] != ' ') joined.erase(0, 1);
    EXPECT_EQ(joined, decoded) << name;
    ++checked;
  }
  if (checked == 0) GTEST_SKIP() << "no tokenizers in " << shared;
}

TEST(StructuredLimits, HostileSpecsAreRefusedNamingTheField) {
  structured::ConstraintLimits limits;
  auto expect_refused = [&](const ConstraintSpec& spec, const std::string& words) {
    try {
      structured::check_constraint_limits(spec, limits);
      ADD_FAILURE() << "accepted: " << spec.text.substr(0, 80);
    } catch (const ConstraintError& e) {
      EXPECT_NE(std::string(e.what()).find("field 'guided_json'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  std::string deep = "{}";
  for (int i = 0; i < 100; ++i) deep = R"({"type": "array", "items": )" + deep + "}";
  expect_refused(spec_of(ConstraintKind::kJsonSchema, deep, "guided_json"), "deeper");
  expect_refused(spec_of(ConstraintKind::kJsonSchema, R"({"type": "array", "minItems": 100000})",
                         "guided_json"),
                 "minItems");
  expect_refused(
      spec_of(ConstraintKind::kJsonSchema, std::string(70000, ' ') + "{}", "guided_json"), "bytes");
  expect_refused(spec_of(ConstraintKind::kJsonSchema, "[1, 2]", "guided_json"), "object");
  expect_refused(spec_of(ConstraintKind::kJsonSchema, "{not json", "guided_json"), "JSON");
  expect_refused(spec_of(ConstraintKind::kJsonSchema,
                         R"({"type": "string", "pattern": "a{99999}"})", "guided_json"),
                 "repetition");
  ConstraintSpec regex =
      spec_of(ConstraintKind::kRegex, std::string(200, '(') + std::string(200, ')'));
  EXPECT_THROW(structured::check_constraint_limits(regex, limits), ConstraintError);
  ConstraintSpec choice;
  choice.kind = ConstraintKind::kChoice;
  EXPECT_THROW(structured::check_constraint_limits(choice, limits), ConstraintError);
  // Braces inside EBNF strings and character classes are text, not repetitions.
  ConstraintSpec ebnf = spec_of(ConstraintKind::kEbnf, R"(root ::= "{99999}" [{}] "(((")");
  EXPECT_NO_THROW(structured::check_constraint_limits(ebnf, limits));
}

TEST(StructuredCompiler, CachesByTextAndReportsErrors) {
  GrammarCompiler c = byte_compiler();
  auto a = c.compile(spec_of(ConstraintKind::kRegex, "[ab]{2}"));
  auto b = c.compile(spec_of(ConstraintKind::kRegex, "[ab]{2}"));
  EXPECT_EQ(a.get(), b.get());
  EXPECT_EQ(c.stats().compiles, 1);
  EXPECT_EQ(c.stats().cache_hits, 1);
  ConstraintSpec ws = spec_of(ConstraintKind::kJsonSchema, R"({"type": "integer"})");
  auto with_ws = c.compile(ws);
  ws.any_whitespace = true;
  EXPECT_NE(c.compile(ws).get(), with_ws.get());  // options are part of the key

  for (auto [kind, text, words] : std::vector<std::tuple<ConstraintKind, std::string, std::string>>{
           {ConstraintKind::kRegex, "(ab", "field 'guided_regex'"},
           {ConstraintKind::kEbnf, "root ::= undefined_rule", "field 'guided_regex'"},
           {ConstraintKind::kEbnf, "not a grammar at all", "field 'guided_regex'"},
           {ConstraintKind::kJsonSchema, R"({"$ref": "#/$defs/missing"})", "field 'guided_regex'"},
       }) {
    try {
      c.compile(spec_of(kind, text, "guided_regex"));
      ADD_FAILURE() << "compiled: " << text;
    } catch (const ConstraintError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(words), std::string::npos) << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    }
  }
  // A failure is not cached: the same text fails again.
  EXPECT_THROW(c.compile(spec_of(ConstraintKind::kRegex, "(ab")), ConstraintError);
}

// Runs a matcher over a grammar for a few greedy steps: the first allowed token each time.
// A grammar xgrammar cannot run kills the process here (stack overflow), failing the test.
void walk(GrammarCompiler& c, const ConstraintSpec& spec, int steps = 8) {
  GrammarMatcher m(c.compile(spec));
  for (int i = 0; i < steps && !m.is_terminated(); ++i) {
    std::set<int32_t> ok = allowed(m);
    ASSERT_FALSE(ok.empty());
    ASSERT_TRUE(m.accept_token(*ok.begin()));
  }
}

void expect_refused(GrammarCompiler& c, const ConstraintSpec& spec, const std::string& words) {
  try {
    c.compile(spec);
    ADD_FAILURE() << "compiled: " << spec.text;
  } catch (const ConstraintError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("field '" + spec.field + "'"), std::string::npos) << what;
    EXPECT_NE(what.find(words), std::string::npos) << what;
  }
}

// xgrammar's matcher recurses without end on a rule that can reach itself before matching a
// byte; the compiler refuses those (every way to write one), and runs the look-alikes that
// consume first.
TEST(StructuredCompiler, LeftRecursiveGrammarsAreRefusedOthersRun) {
  GrammarCompiler c = byte_compiler();
  for (auto [kind, text] : std::vector<std::pair<ConstraintKind, std::string>>{
           {ConstraintKind::kEbnf, "root ::= root"},
           {ConstraintKind::kEbnf, "root ::= root \"a\" | \"b\""},
           {ConstraintKind::kEbnf, "root ::= x \"a\"\nx ::= \"\" | x"},
           {ConstraintKind::kEbnf, "root ::= a\na ::= b \"x\"\nb ::= c\nc ::= \"\" | a"},
           {ConstraintKind::kEbnf, "root ::= (\"a\"?)*"},
           {ConstraintKind::kEbnf, "root ::= ([a-z]*)+ \"!\""},
           {ConstraintKind::kRegex, "(a?)*"},
           {ConstraintKind::kRegex, "(a*)*b"},
           {ConstraintKind::kRegex, "(a|b?)+c"},
           {ConstraintKind::kJsonSchema, R"({"anyOf": [{"$ref": "#"}, {"type": "integer"}]})"},
           {ConstraintKind::kJsonSchema,
            R"({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}})"},
       })
    expect_refused(c, spec_of(kind, text, "guided_x"), "left-recursive");
  // A NUL ends xgrammar's C-string regex parser early (at the start: it read past its buffer).
  expect_refused(c, spec_of(ConstraintKind::kRegex, std::string("\0ab", 3), "guided_regex"), "NUL");
  expect_refused(c, spec_of(ConstraintKind::kEbnf, std::string("root ::= \"a\0\"", 13), "g"),
                 "NUL");
  expect_refused(
      c, spec_of(ConstraintKind::kJsonSchema, R"({"type": "string", "pattern": "\u0000a"})", "j"),
      "NUL");

  for (
      auto [kind, text] : std::vector<std::pair<ConstraintKind, std::string>>{
          {ConstraintKind::kEbnf, "root ::= x \"a\"\nx ::= \"\" | \"b\" x"},
          {ConstraintKind::kEbnf, "root ::= (\"a\" \"b\"?)* \"c\""},
          {ConstraintKind::kEbnf, "root ::= \"(\" root \")\" | \"x\""},
          {ConstraintKind::kRegex, "a*b?c+"},
          {ConstraintKind::kRegex, ""},  // the empty string: xgrammar's converter read past it
          {ConstraintKind::kRegex, "(ab?)*c"},
          {ConstraintKind::kJsonSchema, R"({"type": "array", "items": {"$ref": "#"}})"},
          {ConstraintKind::kJsonSchema,
           R"({"type": "object", "properties": {"a": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}}})"},
      })
    walk(c, spec_of(kind, text));
}

// A chain of rules that can each begin the next is expanded by recursion too: long ones are
// refused before they reach the stack's end; shorter ones run.
TEST(StructuredCompiler, LongChainsOfLeadingRulesAreBounded) {
  GrammarCompiler c = byte_compiler();
  auto chain = [](int n) {
    std::string g = "root ::= r0 \"!\"\n";
    for (int i = 0; i < n; ++i)
      g += fmt::format("r{} ::= r{} \"a\" | \"b\"\n", i, i + 1);  // r{i} starts with r{i+1}
    return g + fmt::format("r{} ::= \"c\"\n", n);
  };
  walk(c, spec_of(ConstraintKind::kEbnf, chain(100)));
  expect_refused(c, spec_of(ConstraintKind::kEbnf, chain(2000), "guided_grammar"), "chain");
}

// Random small grammars over three rules, bodies drawn from bytes, empty strings, rule
// references, optional and repeated parts: each is refused with a ConstraintError or runs.
TEST(StructuredCompiler, RandomGrammarsAreRefusedOrRunNeverCrash) {
  GrammarCompiler c = byte_compiler();
  std::mt19937 rng(1234);
  auto pick = [&](int n) { return int(rng() % uint32_t(n)); };
  const char* names[] = {"root", "x", "y"};
  auto atom = [&]() -> std::string {
    switch (pick(7)) {
      case 0:
      case 1:
        return "\"a\"";
      case 2:
        return "\"\"";
      case 3:
        return "[bc]";
      default:
        return names[pick(3)];
    }
  };
  auto part = [&]() -> std::string {
    std::string a = atom();
    switch (pick(5)) {
      case 0:
        return "(" + a + ")?";
      case 1:
        return "(" + a + ")*";
      case 2:
        return "(" + a + " " + atom() + ")+";
      default:
        return a;
    }
  };
  int refused = 0, ran = 0, left_recursive = 0;
  for (int i = 0; i < 300; ++i) {
    std::string g;
    for (const char* name : names) {
      g += std::string(name) + " ::= ";
      const int alternatives = 1 + pick(3);
      for (int k = 0; k < alternatives; ++k) g += (k ? " | " : "") + part() + " " + part();
      g += "\n";
    }
    try {
      walk(c, spec_of(ConstraintKind::kEbnf, g), 4);
      ++ran;
    } catch (const ConstraintError& e) {
      ++refused;
      left_recursive += std::string(e.what()).find("left-recursive") != std::string::npos;
    }
  }
  std::printf("random grammars: %d ran, %d refused (%d as left-recursive)\n", ran, refused,
              left_recursive);
  EXPECT_GT(left_recursive, 0);
  EXPECT_GT(ran, 0);
}

TEST(StructuredMatcher, MasksFollowTheGrammarAndEndWithTheStopToken) {
  GrammarCompiler c = byte_compiler();
  ConstraintSpec choice;
  choice.kind = ConstraintKind::kChoice;
  choice.choices = {"yes", "no", "a\"b\\c\n"};
  choice.field = "guided_choice";
  GrammarMatcher m(c.compile(choice));
  EXPECT_EQ(allowed(m), (std::set<int32_t>{'y', 'n', 'a'}));
  ASSERT_TRUE(m.accept_token('a'));
  EXPECT_FALSE(m.accept_token('x'));  // refused, state unchanged
  for (char ch : std::string("\"b\\c\n")) {
    EXPECT_EQ(allowed(m), (std::set<int32_t>{uint8_t(ch)}));
    ASSERT_TRUE(m.accept_token(uint8_t(ch)));
  }
  EXPECT_EQ(allowed(m), (std::set<int32_t>{kEos}));
  EXPECT_FALSE(m.is_terminated());
  ASSERT_TRUE(m.accept_token(kEos));
  EXPECT_TRUE(m.is_terminated());
  EXPECT_EQ(allowed(m), (std::set<int32_t>{kEos}));

  GrammarMatcher json(c.compile(spec_of(ConstraintKind::kJsonSchema,
                                        R"({"type": "object", "properties": {"a": {"enum": [1]}},
                                            "required": ["a"]})")));
  // Compact JSON with a one-value enum leaves nothing to choose: the whole text is forced.
  EXPECT_EQ(json.find_jump_forward_string(), "{\"a\": 1}");
  EXPECT_FALSE(json.accept_string("{\"a\":  1}"));  // not the compact form
  EXPECT_TRUE(json.accept_string("{\"a\": 1}"));
  EXPECT_EQ(allowed(json).count(kEos), 1u);
}

TEST(StructuredSampler, RestrictionsComeBeforeSampling) {
  std::vector<float> logits(64, 0.0f);
  logits[5] = 10.0f;
  std::vector<float> scratch;
  SamplingParams p;
  p.temperature = 0;
  SampleInput in;
  in.logits = logits;
  in.params = &p;
  RequestRng rng(1);
  EXPECT_EQ(sample_token(in, rng, scratch).token, 5);
  std::vector<int32_t> mask(2, 0);
  mask[1] = 1 << (40 - 32);  // only 40
  in.token_bitmask = mask;
  EXPECT_EQ(sample_token(in, rng, scratch).token, 40);
  in.token_bitmask = {};
  p.logit_bias = {{7, 20.0f}};
  EXPECT_EQ(sample_token(in, rng, scratch).token, 7);
  p.logit_bias.clear();
  p.allowed_token_ids = std::vector<int32_t>{3, 9};
  logits[9] = 1.0f;
  EXPECT_EQ(sample_token(in, rng, scratch).token, 9);
  std::vector<int32_t> banned = {9};
  in.banned_ids = banned;
  EXPECT_EQ(sample_token(in, rng, scratch).token, 3);
  // min_tokens cannot block the only tokens a restriction leaves.
  p.allowed_token_ids = std::vector<int32_t>{2};
  std::vector<int32_t> eos = {2};
  in.eos_token_ids = eos;
  in.banned_ids = {};
  p.min_tokens = 4;
  EXPECT_EQ(sample_token(in, rng, scratch).token, 2);
  // Nothing left at all is an error, not a token.
  in.banned_ids = eos;
  EXPECT_THROW(sample_token(in, rng, scratch), Error);
}

TEST(StructuredEngine, ConstrainedRequestsFinishWithStopInsideTheGrammar) {
  EngineConfig config;
  config.num_kv_blocks = 64;
  auto engine = testing::make_tiny_engine("llama3", config);
  GrammarCompiler c(engine->tokenizer(), int32_t(engine->model_config().vocab_size),
                    engine->eos_token_ids());
  ConstraintSpec choice;
  choice.kind = ConstraintKind::kChoice;
  choice.choices = {"alpha", "beta", "gamma delta"};
  ConstraintSpec regex = spec_of(ConstraintKind::kRegex, "[0-9]{2,4}-[a-c]+x");
  ConstraintSpec schema = spec_of(ConstraintKind::kJsonSchema,
                                  R"({"type": "object", "properties": {"ok": {"type": "boolean"},
                                      "n": {"enum": [1, 2, 3]}}, "required": ["ok", "n"]})");
  std::vector<std::pair<int64_t, int>> ids;
  for (int k = 0; k < 3; ++k) {
    for (uint64_t seed = 0; seed < 4; ++seed) {
      SamplingParams p;
      p.max_tokens = 200;
      p.temperature = 1.0f;
      p.seed = seed;
      p.ignore_eos = seed == 3;  // a complete grammar ends the request all the same
      p.constraint = c.compile(k == 0 ? choice : k == 1 ? regex : schema);
      ids.emplace_back(engine->add_request({1, 2, 3, int32_t(seed)}, p), k);
    }
  }
  while (engine->has_unfinished()) engine->step();
  for (auto [id, k] : ids) {
    const Sequence* s = engine->find(id);
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->finish_reason, "stop") << s->text << " " << s->error_message;
    if (k == 0)
      EXPECT_TRUE(s->text == "alpha" || s->text == "beta" || s->text == "gamma delta") << s->text;
    if (k == 1) EXPECT_TRUE(std::regex_match(s->text, std::regex("[0-9]{2,4}-[a-c]+x"))) << s->text;
    if (k == 2)
      EXPECT_TRUE(std::regex_match(s->text, std::regex(R"(\{"ok": (true|false), "n": [123]\})")))
          << s->text;
  }
}

TEST(StructuredEngine, LogitBiasIdsAreCheckedAgainstTheVocabulary) {
  EngineConfig config;
  config.num_kv_blocks = 16;
  auto engine = testing::make_tiny_engine("llama2", config);
  SamplingParams p;
  p.logit_bias = {{100000, 1.0f}};
  EXPECT_THROW(engine->add_request({1, 2}, p), Error);
  p.logit_bias.clear();
  p.allowed_token_ids = std::vector<int32_t>{100000};
  EXPECT_THROW(engine->add_request({1, 2}, p), Error);
}

}  // namespace
}  // namespace relayllm
