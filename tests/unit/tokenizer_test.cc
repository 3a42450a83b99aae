// Tokenizer tests on the real Llama 2, Llama 3 and Qwen 3 tokenizer files. Expected ids and decoded
// strings were produced with the reference `tokenizers` package.
#include "relayllm/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "relayllm/common/error.h"
#include "relayllm/common/utf8.h"

namespace relayllm {
namespace {

namespace fs = std::filesystem;
using Ids = std::vector<int32_t>;

fs::path tokenizer_dir(const std::string& name) {
  return fs::path(RELAYLLM_SHARED_DIR) / "tokenizers" / name;
}

class RealTokenizers : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tokenizers_ = new std::map<std::string, Tokenizer>();
    for (const char* name : {"llama2", "llama3", "qwen3"}) {
      fs::path dir = tokenizer_dir(name);
      if (!fs::exists(dir / "tokenizer.json")) continue;
      tokenizers_->emplace(
          name, Tokenizer::from_files(dir / "tokenizer.json", dir / "tokenizer_config.json"));
    }
  }
  static void TearDownTestSuite() {
    delete tokenizers_;
    tokenizers_ = nullptr;
  }
  void SetUp() override {
    if (tokenizers_->size() != 3)
      GTEST_SKIP() << "tokenizer files not found under " << RELAYLLM_SHARED_DIR;
  }
  static const Tokenizer& get(const std::string& name) { return tokenizers_->at(name); }

  static std::map<std::string, Tokenizer>* tokenizers_;
};

std::map<std::string, Tokenizer>* RealTokenizers::tokenizers_ = nullptr;

struct EncodeCase {
  const char* tokenizer;
  const char* text;
  Ids with_special;
  Ids without_special;
};

TEST_F(RealTokenizers, EncodeMatchesReference) {
  const std::vector<EncodeCase> cases = {
      {"llama2", "Hello world", {1, 22557, 1526}, {22557, 1526}},
      {"llama2", "Hello<s>world", {1, 22557, 1, 1526}, {22557, 1, 1526}},
      {"llama2",
       "It's 2024!\n",
       {1, 661, 28742, 28713, 28705, 28750, 28734, 28750, 28781, 28808, 13},
       {661, 28742, 28713, 28705, 28750, 28734, 28750, 28781, 28808, 13}},
      {"llama2",
       "\n\t\xF0\x9F\x98\x80 \xC3\xA9",
       {1, 28705, 13, 12, 30575, 1233},
       {28705, 13, 12, 30575, 1233}},
      {"llama2", "\xE4\xBD\xA0\xE5\xA5\xBD", {1, 28705, 29383, 29530}, {28705, 29383, 29530}},
      {"llama2", "", {1}, {}},
      {"llama3", "Hello world", {9906, 1917}, {9906, 1917}},
      {"llama3", "Hello<s>world", {9906, 45147, 29, 14957}, {9906, 45147, 29, 14957}},
      {"llama3",
       "It's 2024!\n",
       {2181, 596, 220, 2366, 19, 4999},
       {2181, 596, 220, 2366, 19, 4999}},
      {"llama3",
       "\n\t\xF0\x9F\x98\x80 \xC3\xA9",
       {198, 197, 76460, 222, 4046},
       {198, 197, 76460, 222, 4046}},
      {"llama3",
       "<|im_start|>x<|eot_id|>",
       {27, 91, 318, 5011, 91, 29, 87, 128009},
       {27, 91, 318, 5011, 91, 29, 87, 128009}},
      {"llama3", "\xE4\xBD\xA0\xE5\xA5\xBD", {57668, 53901}, {57668, 53901}},
      {"llama3", "", {}, {}},
      {"qwen3", "Hello world", {9707, 1879}, {9707, 1879}},
      {"qwen3",
       "It's 2024!\n",
       {2132, 594, 220, 17, 15, 17, 19, 4894},
       {2132, 594, 220, 17, 15, 17, 19, 4894}},
      {"qwen3",
       "\n\t\xF0\x9F\x98\x80 \xC3\xA9",
       {198, 197, 141334, 3958},
       {198, 197, 141334, 3958}},
      {"qwen3",
       "<|im_start|>x<|eot_id|>",
       {151644, 87, 27, 91, 68, 354, 842, 91, 29},
       {151644, 87, 27, 91, 68, 354, 842, 91, 29}},
      {"qwen3", "\xE4\xBD\xA0\xE5\xA5\xBD", {108386}, {108386}},
      {"qwen3", "", {}, {}},
  };
  for (const auto& c : cases) {
    const Tokenizer& tok = get(c.tokenizer);
    EXPECT_EQ(tok.encode(c.text, true), c.with_special) << c.tokenizer << " text: " << c.text;
    EXPECT_EQ(tok.encode(c.text, false), c.without_special) << c.tokenizer << " text: " << c.text;
  }
}

TEST_F(RealTokenizers, SpecialTokensInTextAreSplitOut) {
  EXPECT_EQ(get("llama3").encode("a<|begin_of_text|>b", false), (Ids{64, 128000, 65}));
  // Qwen's non-special added tokens are split out too.
  Ids think = get("qwen3").encode("<think>ok</think>", false);
  ASSERT_EQ(think.size(), 3u);
  EXPECT_EQ(think.front(), 151667);
  EXPECT_EQ(think.back(), 151668);
  EXPECT_FALSE(get("qwen3").is_special(151667));
  EXPECT_TRUE(get("qwen3").is_special(151644));
}

TEST_F(RealTokenizers, ByteFallbackForCharactersOutsideTheVocab) {
  const Tokenizer& tok = get("llama2");
  // "\n" is not a piece of the Llama 2 vocabulary, so it is spelled as the byte token <0x0A>.
  EXPECT_EQ(tok.id_to_token(13), "<0x0A>");
  Ids ids = tok.encode("a\nb", false);
  EXPECT_NE(std::find(ids.begin(), ids.end(), 13), ids.end());
  EXPECT_EQ(tok.decode(ids, true), "a\nb");
}

TEST_F(RealTokenizers, NfcNormalizerComposesCombiningMarks) {
  const Tokenizer& qwen = get("qwen3");
  EXPECT_EQ(qwen.encode("e\xCC\x81", false), qwen.encode("\xC3\xA9", false));
  // Llama 3 has no normalizer, so the decomposed form stays different.
  const Tokenizer& llama3 = get("llama3");
  EXPECT_NE(llama3.encode("e\xCC\x81", false), llama3.encode("\xC3\xA9", false));
}

TEST_F(RealTokenizers, Metadata) {
  EXPECT_EQ(get("llama2").vocab_size(), 32000);
  EXPECT_EQ(get("llama3").vocab_size(), 128256);
  EXPECT_EQ(get("qwen3").vocab_size(), 151669);
  EXPECT_EQ(get("llama2").bos_token_id(), 1);
  EXPECT_EQ(get("llama2").eos_token_id(), 2);
  EXPECT_EQ(get("llama3").bos_token_id(), 128000);
  EXPECT_EQ(get("llama3").eos_token_id(), 128001);
  EXPECT_EQ(get("qwen3").bos_token_id(), std::nullopt);
  EXPECT_EQ(get("qwen3").eos_token_id(), 151645);
  EXPECT_TRUE(get("llama2").chat_template().empty());
  EXPECT_FALSE(get("llama3").chat_template().empty());
  EXPECT_FALSE(get("qwen3").chat_template().empty());
  EXPECT_EQ(get("qwen3").token_to_id("<|im_end|>"), 151645);
  EXPECT_EQ(get("llama3").token_to_id("Hello"), 9906);
  EXPECT_EQ(get("llama3").token_to_id("no such token"), std::nullopt);
  EXPECT_EQ(get("llama3").id_to_token(128009), "<|eot_id|>");
  EXPECT_THROW(get("llama3").id_to_token(200000), Error);
}

TEST_F(RealTokenizers, DecodeMatchesReference) {
  std::ifstream in(fs::path(RELAYLLM_SOURCE_DIR) / "tests/data/tokenizer_decode_cases.json");
  ASSERT_TRUE(in) << "missing tests/data/tokenizer_decode_cases.json";
  nlohmann::json cases = nlohmann::json::parse(in);
  size_t checked = 0;
  for (const auto& [name, list] : cases.items()) {
    const Tokenizer& tok = get(name);
    for (const auto& c : list) {
      Ids ids = c["ids"].get<Ids>();
      bool skip = c["skip_special_tokens"].get<bool>();
      EXPECT_EQ(tok.decode(ids, skip), c["text"].get<std::string>())
          << name << " ids " << c["ids"].dump();
      ++checked;
    }
  }
  EXPECT_GT(checked, 200u);
}

const std::vector<std::string> kRoundTripTexts = {
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces, trailing tab\t",
    "\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C",  // 你好，世界
    "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 family, "
    "\xF0\x9F\x91\x8B\xF0\x9F\x8F\xBD",
    "def f(x):\n    return x ** 2\n",
    "\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4 "
    "\xD8\xA7\xD9\x84\xD8\xB9\xD8\xB1\xD8\xA8\xD9\x8A\xD8\xA9",  // 한국어 العربية
};

TEST_F(RealTokenizers, DecodeInvertsEncode) {
  for (const char* name : {"llama2", "llama3", "qwen3"}) {
    const Tokenizer& tok = get(name);
    for (const auto& text : kRoundTripTexts) {
      EXPECT_EQ(tok.decode(tok.encode(text, true), true), text) << name << ": " << text;
    }
  }
}

// Feeds ids one at a time and checks every piece is whole UTF-8 and the pieces add up to
// `expected`.
void check_streaming(const Tokenizer& tok, const Ids& prompt, const Ids& generated,
                     const std::string& expected, const std::string& label) {
  IncrementalDetokenizer detok(tok, prompt, true);
  std::string all;
  for (int32_t id : generated) {
    std::string piece = detok.push(id);
    EXPECT_TRUE(utf8::is_valid(piece)) << label << ": broken UTF-8 piece after id " << id;
    all += piece;
  }
  all += detok.flush();
  EXPECT_EQ(all, expected) << label;
}

TEST_F(RealTokenizers, IncrementalDetokenizerNeverSplitsCharacters) {
  const std::vector<std::string> texts = {
      "\xF0\x9F\x98\x80\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 "
      "\xF0\x9F\x91\x8B\xF0\x9F"
      "\x8F\xBF end",
      "\xE6\x9C\xBA\xE5\x99\xA8\xE5\xAD\xA6\xE4\xB9\xA0\xE6\x98\xAF\xE4\xBA\xBA\xE5\xB7\xA5\xE6\x99"
      "\xBA\xE8\x83\xBD",
      "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E and English \xF0\x9D\x95\xB3\xF0\x9D\x96\x8A",
      " Hello world, this is a test.\nNew line.",
  };
  for (const char* name : {"llama2", "llama3", "qwen3"}) {
    const Tokenizer& tok = get(name);
    for (const auto& text : texts) {
      Ids ids = tok.encode(text, false);
      check_streaming(tok, {}, ids, tok.decode(ids, true),
                      std::string(name) + " no prompt: " + text);
      // With a prompt, the stream is what the generated ids add to the prompt's text (for
      // SentencePiece that includes the first word's leading space).
      Ids prompt = tok.encode("Answer:", true);
      Ids all = prompt;
      all.insert(all.end(), ids.begin(), ids.end());
      std::string prompt_text = tok.decode(prompt, true);
      std::string full_text = tok.decode(all, true);
      ASSERT_EQ(full_text.compare(0, prompt_text.size(), prompt_text), 0);
      check_streaming(tok, prompt, ids, full_text.substr(prompt_text.size()),
                      std::string(name) + " prompt: " + text);
    }
  }
}

TEST_F(RealTokenizers, IncrementalDetokenizerGivesSentencePieceSpaceAfterPrompt) {
  const Tokenizer& tok = get("llama2");
  Ids prompt = tok.encode("Say hi:", true);
  Ids gen = tok.encode("Hello world", false);  // "▁Hello", "▁world"
  IncrementalDetokenizer detok(tok, prompt, true);
  std::string all;
  for (int32_t id : gen) all += detok.push(id);
  all += detok.flush();
  EXPECT_EQ(all, " Hello world");
}

TEST_F(RealTokenizers, IncrementalDetokenizerHoldsBackPartialBytes) {
  const Tokenizer& tok = get("llama2");
  auto byte = [&](int b) { return *tok.token_to_id(fmt::format("<0x{:02X}>", b)); };
  IncrementalDetokenizer detok(tok, {}, true);
  EXPECT_EQ(detok.push(byte(0xE4)), "");
  EXPECT_EQ(detok.push(byte(0xBD)), "");
  EXPECT_EQ(detok.push(byte(0xA0)), "\xE4\xBD\xA0");
  // An unfinished sequence at the end comes out of flush() as replacement characters.
  EXPECT_EQ(detok.push(byte(0xF0)), "");
  std::string rest = detok.flush();
  EXPECT_TRUE(utf8::is_valid(rest));
  EXPECT_EQ(rest, "\xEF\xBF\xBD");
}

TEST(ByteTokenizer, EncodesBytesAndSpecials) {
  Tokenizer tok = Tokenizer::make_byte_tokenizer();
  EXPECT_EQ(tok.vocab_size(), 258);
  EXPECT_EQ(tok.bos_token_id(), 256);
  EXPECT_EQ(tok.eos_token_id(), 257);
  EXPECT_EQ(tok.encode("hi", true), (Ids{256, 'h', 'i'}));
  EXPECT_EQ(tok.encode("hi", false), (Ids{'h', 'i'}));
  EXPECT_EQ(tok.encode("a</s>", false), (Ids{'a', 257}));
  EXPECT_EQ(tok.encode("\xC3\xA9 \n", false), (Ids{0xC3, 0xA9, ' ', '\n'}));
  EXPECT_EQ(tok.encode("", true), (Ids{256}));
  EXPECT_EQ(tok.decode(Ids{256, 0xC3, 0xA9, 257}, true), "\xC3\xA9");
  EXPECT_EQ(tok.decode(Ids{256, 'x', 257}, false), "<s>x</s>");
  EXPECT_TRUE(tok.is_special(256));
  EXPECT_FALSE(tok.is_special(65));
  // A lone invalid byte decodes to U+FFFD.
  EXPECT_EQ(tok.decode(Ids{0xFF}, true), "\xEF\xBF\xBD");

  IncrementalDetokenizer detok(tok, Ids{256}, true);
  EXPECT_EQ(detok.push(0xE4), "");
  EXPECT_EQ(detok.push(0xBD), "");
  EXPECT_EQ(detok.push(0xA0), "\xE4\xBD\xA0");
  EXPECT_EQ(detok.push('!'), "!");
  EXPECT_EQ(detok.flush(), "");
}

TEST(TokenizerJson, ErrorsNameTheComponent) {
  nlohmann::json base = {
      {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}}, {"merges", {"a b"}}}},
  };
  Tokenizer ok = Tokenizer::from_json(base, nlohmann::json::object());
  EXPECT_EQ(ok.encode("abba", false), (Ids{2, 1, 0}));

  auto message_of = [](const nlohmann::json& j) -> std::string {
    try {
      Tokenizer::from_json(j, nlohmann::json::object());
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  nlohmann::json bad_normalizer = base;
  bad_normalizer["normalizer"] = {{"type", "BertNormalizer"}};
  EXPECT_NE(message_of(bad_normalizer).find("BertNormalizer"), std::string::npos);
  nlohmann::json bad_model = base;
  bad_model["model"]["type"] = "Unigram";
  EXPECT_NE(message_of(bad_model).find("Unigram"), std::string::npos);
  nlohmann::json bad_merge = base;
  bad_merge["model"]["merges"] = {"a c"};
  EXPECT_NE(message_of(bad_merge).find("merges[0]"), std::string::npos);
  nlohmann::json bad_decoder = base;
  bad_decoder["decoder"] = {{"type", "WordPiece"}};
  EXPECT_NE(message_of(bad_decoder).find("WordPiece"), std::string::npos);
}

TEST(TokenizerJson, MissingConfigFileMeansDefaults) {
  fs::path dir = tokenizer_dir("qwen3");
  if (!fs::exists(dir / "tokenizer.json")) GTEST_SKIP() << "no qwen3 tokenizer";
  Tokenizer tok = Tokenizer::from_files(dir / "tokenizer.json", dir / "no_such_config.json");
  EXPECT_EQ(tok.eos_token_id(), std::nullopt);
  EXPECT_TRUE(tok.chat_template().empty());
  EXPECT_EQ(tok.encode("Hello world", true), (Ids{9707, 1879}));
  EXPECT_THROW(Tokenizer::from_files(dir / "missing_tokenizer.json", {}), Error);
}

}  // namespace
}  // namespace relayllm
