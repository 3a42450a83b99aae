#include "relayllm/tokenizer/gguf_tokenizer.h"

#include <algorithm>
#include <unordered_map>

#include "relayllm/common/error.h"
#include "relayllm/common/utf8.h"
#include "relayllm/tokenizer/tokenizer_limits.h"

namespace relayllm {
namespace {

constexpr int kTokenControl = 3, kTokenUserDefined = 4;

// The split regexes llama.cpp uses for each tokenizer.ggml.pre value (its llama-vocab
// pre-tokenizer table), as HF pre-tokenizers.
const char* const kGpt2Regex =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const char* const kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

nlohmann::json split(const char* regex) {
  return {{"type", "Split"},
          {"pattern", {{"Regex", regex}}},
          {"behavior", "Isolated"},
          {"invert", false}};
}
nlohmann::json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", false},
          {"trim_offsets", true},
          {"use_regex", use_regex}};
}

// Returns the pre-tokenizer and whether BPE skips merging words already in the vocab
// (llama3's ignore_merges).
std::pair<nlohmann::json, bool> gpt2_pre_tokenizer(const std::string& pre,
                                                   const std::string& source) {
  if (pre == "default" || pre == "gpt-2" || pre == "gpt2" || pre == "olmo" || pre == "mpt" ||
      pre == "jais" || pre == "trillion")
    return {byte_level(true), false};
  if (pre == "smollm" || pre == "starcoder" || pre == "refact" || pre == "command-r" ||
      pre == "codeshell" || pre == "exaone" || pre == "minerva")
    return {{{"type", "Sequence"}, {"pretokenizers", {split("\\p{N}"), byte_level(true)}}}, false};
  if (pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe" || pre == "falcon3" ||
      pre == "pixtral")
    return {{{"type", "Sequence"}, {"pretokenizers", {split(kLlama3Regex), byte_level(false)}}},
            pre != "pixtral"};
  if (pre == "qwen2" || pre == "deepseek-r1-qwen")
    return {{{"type", "Sequence"}, {"pretokenizers", {split(kQwen2Regex), byte_level(false)}}},
            false};
  fail(
      "{}: metadata key tokenizer.ggml.pre = \"{}\" is unsupported (supported: default, gpt2, "
      "smollm, starcoder, llama3, llama-bpe, qwen2, ...)",
      source, pre);
}

std::vector<int32_t> token_types(const GgufFile& file, size_t count) {
  std::vector<int32_t> types(count, 1);
  if (!file.contains("tokenizer.ggml.token_type")) return types;
  std::vector<double> raw = file.number_array("tokenizer.ggml.token_type");
  if (raw.size() != count)
    fail(
        "{}: metadata key tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has "
        "{}",
        file.source(), raw.size(), count);
  for (size_t i = 0; i < count; ++i) {
    // A float outside int32 would make the cast undefined; token types are small integers.
    if (!(raw[i] >= 0 && raw[i] <= 1024))
      fail("{}: metadata key tokenizer.ggml.token_type[{}] = {} is not a token type", file.source(),
           i, raw[i]);
    types[i] = int32_t(raw[i]);
  }
  return types;
}

std::optional<int32_t> token_id(const GgufFile& file, const char* key, size_t count) {
  auto id = file.get_uint(key);
  if (!id) return std::nullopt;
  if (*id >= count)
    fail("{}: metadata key {} = {} is not a token id (vocab size {})", file.source(), key, *id,
         count);
  return int32_t(*id);
}

nlohmann::json added_token(int32_t id, const std::string& content, bool special) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", special}};
}

nlohmann::json post_processor(const std::vector<std::string>& tokens, std::optional<int32_t> bos,
                              std::optional<int32_t> eos, bool add_bos, bool add_eos) {
  if ((!add_bos || !bos) && (!add_eos || !eos)) return nullptr;
  nlohmann::json single = nlohmann::json::array(), specials = nlohmann::json::object();
  auto special = [&](int32_t id) {
    const std::string& t = tokens[size_t(id)];
    specials[t] = {{"id", t}, {"ids", {id}}, {"tokens", {t}}};
    single.push_back({{"SpecialToken", {{"id", t}, {"type_id", 0}}}});
  };
  if (add_bos && bos) special(*bos);
  single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  if (add_eos && eos) special(*eos);
  return {{"type", "TemplateProcessing"}, {"single", single}, {"special_tokens", specials}};
}

// SentencePiece BPE ranks pairs by the score of the token they form; HF's converter of the
// same data orders ties by the scores of the two parts, then by vocabulary order.
nlohmann::json merges_from_scores(const std::vector<std::string>& tokens,
                                  const std::vector<double>& scores) {
  std::unordered_map<std::string_view, int32_t> ids;
  ids.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) ids.emplace(tokens[i], int32_t(i));
  struct Merge {
    int32_t merged, left, right;
  };
  std::vector<Merge> merges;
  for (size_t t = 0; t < tokens.size(); ++t) {
    std::string_view token = tokens[t];
    if (ids[token] != int32_t(t)) continue;  // a duplicate token string
    for (size_t cut = utf8::sequence_length(uint8_t(token[0])); cut < token.size();
         cut += utf8::sequence_length(uint8_t(token[cut]))) {
      auto l = ids.find(token.substr(0, cut)), r = ids.find(token.substr(cut));
      if (l != ids.end() && r != ids.end()) merges.push_back({int32_t(t), l->second, r->second});
    }
  }
  std::stable_sort(merges.begin(), merges.end(), [&](const Merge& a, const Merge& b) {
    if (scores[size_t(a.merged)] != scores[size_t(b.merged)])
      return scores[size_t(a.merged)] > scores[size_t(b.merged)];
    if (scores[size_t(a.left)] != scores[size_t(b.left)])
      return scores[size_t(a.left)] > scores[size_t(b.left)];
    return scores[size_t(a.right)] > scores[size_t(b.right)];
  });
  nlohmann::json out = nlohmann::json::array();
  for (const Merge& m : merges) out.push_back({tokens[size_t(m.left)], tokens[size_t(m.right)]});
  return out;
}

}  // namespace

GgufTokenizerJson gguf_tokenizer_json(const GgufFile& file) {
  const std::string src = file.source();
  const std::string model = file.require_string("tokenizer.ggml.model");
  const std::vector<std::string> tokens = file.string_array("tokenizer.ggml.tokens");
  if (tokens.empty()) fail("{}: metadata key tokenizer.ggml.tokens is empty", src);
  if (tokens.size() > size_t(kMaxTokenId) + 1)
    fail("{}: metadata key tokenizer.ggml.tokens holds {} tokens, more than the limit {}", src,
         tokens.size(), kMaxTokenId + 1);
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i].empty() || !utf8::is_valid(tokens[i]))
      fail("{}: metadata key tokenizer.ggml.tokens[{}] is empty or not UTF-8", src, i);
  const std::vector<int32_t> types = token_types(file, tokens.size());
  const std::optional<int32_t> bos = token_id(file, "tokenizer.ggml.bos_token_id", tokens.size());
  const std::optional<int32_t> eos = token_id(file, "tokenizer.ggml.eos_token_id", tokens.size());
  const std::optional<int32_t> unk =
      token_id(file, "tokenizer.ggml.unknown_token_id", tokens.size());

  nlohmann::json vocab = nlohmann::json::object();
  for (size_t i = 0; i < tokens.size(); ++i)
    if (!vocab.contains(tokens[i])) vocab[tokens[i]] = int32_t(i);
  nlohmann::json added = nlohmann::json::array();
  for (size_t i = 0; i < tokens.size(); ++i)
    if (types[i] == kTokenControl || types[i] == kTokenUserDefined)
      added.push_back(added_token(int32_t(i), tokens[i], types[i] == kTokenControl));

  GgufTokenizerJson out;
  nlohmann::json& j = out.tokenizer;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  if (model == "gpt2") {
    std::vector<std::string> merges = file.string_array("tokenizer.ggml.merges");
    for (size_t i = 0; i < merges.size(); ++i) {
      size_t space = merges[i].find(' ');
      if (space == std::string::npos || space == 0 || space + 1 == merges[i].size() ||
          merges[i].find(' ', space + 1) != std::string::npos)
        fail(
            "{}: metadata key tokenizer.ggml.merges[{}] = \"{}\" is not two tokens separated "
            "by one space",
            src, i, merges[i]);
    }
    auto [pre, ignore_merges] =
        gpt2_pre_tokenizer(file.get_string("tokenizer.ggml.pre").value_or("default"), src);
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = pre;
    j["decoder"] = byte_level(true);
    j["model"] = {{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false},
                  {"byte_fallback", false},
                  {"ignore_merges", ignore_merges},
                  {"vocab", vocab},
                  {"merges", merges}};
    j["post_processor"] = post_processor(
        tokens, bos, eos, file.get_bool("tokenizer.ggml.add_bos_token").value_or(false),
        file.get_bool("tokenizer.ggml.add_eos_token").value_or(false));
  } else if (model == "llama") {
    std::vector<double> scores = file.number_array("tokenizer.ggml.scores");
    if (scores.size() != tokens.size())
      fail(
          "{}: metadata key tokenizer.ggml.scores has {} entries but tokenizer.ggml.tokens has "
          "{}",
          src, scores.size(), tokens.size());
    const bool add_space = file.get_bool("tokenizer.ggml.add_space_prefix").value_or(true);
    const std::string space = "\xe2\x96\x81";  // U+2581, SentencePiece's visible space
    nlohmann::json replace_space = {
        {"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", space}};
    j["normalizer"] =
        add_space ? nlohmann::json{{"type", "Sequence"},
                                   {"normalizers",
                                    {{{"type", "Prepend"}, {"prepend", space}}, replace_space}}}
                  : replace_space;
    j["pre_tokenizer"] = nullptr;
    nlohmann::json decoders = {
        {{"type", "Replace"}, {"pattern", {{"String", space}}}, {"content", " "}},
        {{"type", "ByteFallback"}},
        {{"type", "Fuse"}}};
    if (add_space)
      decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    j["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
    j["model"] = {{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", unk ? nlohmann::json(tokens[size_t(*unk)]) : nlohmann::json()},
                  {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr},
                  {"fuse_unk", true},
                  {"byte_fallback", true},
                  {"ignore_merges", false},
                  {"vocab", vocab},
                  {"merges", merges_from_scores(tokens, scores)}};
    j["post_processor"] = post_processor(
        tokens, bos, eos, file.get_bool("tokenizer.ggml.add_bos_token").value_or(true),
        file.get_bool("tokenizer.ggml.add_eos_token").value_or(false));
  } else {
    fail("{}: metadata key tokenizer.ggml.model = \"{}\" is unsupported (supported: gpt2, llama)",
         src, model);
  }

  nlohmann::json& c = out.config;
  c = nlohmann::json::object();
  if (bos) c["bos_token"] = tokens[size_t(*bos)];
  if (eos) c["eos_token"] = tokens[size_t(*eos)];
  if (auto tmpl = file.get_string("tokenizer.chat_template")) c["chat_template"] = *tmpl;
  return out;
}

Tokenizer load_gguf_tokenizer(const GgufFile& file) {
  GgufTokenizerJson json = gguf_tokenizer_json(file);
  try {
    return Tokenizer::from_json(json.tokenizer, json.config);
  } catch (const Error& e) {
    fail("{}: the tokenizer built from its metadata is invalid: {}", file.source(), e.what());
  }
}

}  // namespace relayllm
