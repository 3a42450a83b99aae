#include "relayllm/tokenizer/tokenizer.h"

#include <unordered_set>

#include "relayllm/common/bounded_json.h"
#include "relayllm/common/json_fields.h"
#include "relayllm/common/utf8.h"
#include "relayllm/tokenizer/added_vocabulary.h"
#include "relayllm/tokenizer/bpe_model.h"
#include "relayllm/tokenizer/byte_level.h"
#include "relayllm/tokenizer/decoder.h"
#include "relayllm/tokenizer/normalizer.h"
#include "relayllm/tokenizer/post_processor.h"
#include "relayllm/tokenizer/pre_tokenizer.h"

namespace relayllm {

using json_fields::child;
using json_fields::field;
using json_fields::field_or;

struct Tokenizer::Impl {
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  AddedVocabulary added;
  PostProcessor post_processor;
  std::unique_ptr<Decoder> decoder;
  std::unordered_set<std::string> special_contents;
  int32_t vocab_size = 0;
  std::optional<int32_t> bos_id, eos_id;
  std::string bos_token, eos_token;
  std::string chat_template;

  void encode_plain(std::string_view text, bool at_text_start, std::vector<int32_t>& out) const;
};

namespace {

nlohmann::json read_json(const std::filesystem::path& path) {
  return read_bounded_json_file(path.string());
}

// tokenizer_config tokens are a string, an AddedToken object {"content": ...}, or null.
std::string config_token(const nlohmann::json& config, const char* key, const std::string& where) {
  if (!config.is_object() || !config.contains(key) || config[key].is_null()) return {};
  const auto& value = config[key];
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object())
    return field<std::string>(value, "content", fmt::format("{}.{}", where, key));
  fail("{}: field \"{}\" must be a string, an object with \"content\", or null", where, key);
}

std::string config_chat_template(const nlohmann::json& config, const std::string& where) {
  if (!config.is_object() || !config.contains("chat_template") || config["chat_template"].is_null())
    return {};
  const auto& value = config["chat_template"];
  if (value.is_string()) return value.get<std::string>();
  // The list form [{"name": ..., "template": ...}] holds named variants; "default" is the chat one.
  if (value.is_array()) {
    for (const auto& entry : value) {
      if (entry.is_object() && entry.value("name", "") == "default") {
        return field<std::string>(entry, "template", where + ".chat_template");
      }
    }
    return {};
  }
  fail("{}: field \"chat_template\" must be a string or a list of named templates", where);
}

}  // namespace

void Tokenizer::Impl::encode_plain(std::string_view text, bool at_text_start,
                                   std::vector<int32_t>& out) const {
  std::string normalized =
      normalizer ? normalizer->normalize(std::string(text)) : std::string(text);
  std::vector<TextPiece> pieces;
  std::vector<std::optional<int32_t>> piece_tokens;
  if (added.has_normalized_tokens()) {
    for (const auto& s : added.split(normalized, true)) {
      if (s.token_id) {
        pieces.push_back({});
        piece_tokens.push_back(s.token_id);
      } else {
        pieces.push_back(
            {normalized.substr(s.begin, s.end - s.begin), at_text_start && s.begin == 0});
        piece_tokens.push_back(std::nullopt);
      }
    }
  } else {
    pieces.push_back({std::move(normalized), at_text_start});
    piece_tokens.push_back(std::nullopt);
  }
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (piece_tokens[i]) {
      out.push_back(*piece_tokens[i]);
      continue;
    }
    std::vector<TextPiece> words{std::move(pieces[i])};
    if (pre_tokenizer) pre_tokenizer->pre_tokenize(words);
    for (const auto& word : words) model->tokenize(word.text, out);
  }
}

Tokenizer Tokenizer::from_files(const std::filesystem::path& tokenizer_json,
                                const std::filesystem::path& tokenizer_config_json) {
  nlohmann::json tokenizer = read_json(tokenizer_json);
  nlohmann::json config = nlohmann::json::object();
  if (!tokenizer_config_json.empty() && std::filesystem::exists(tokenizer_config_json)) {
    config = read_json(tokenizer_config_json);
  }
  try {
    return from_json(tokenizer, config);
  } catch (const Error& e) {
    fail("{} / {}: {}", tokenizer_json.string(), tokenizer_config_json.filename().string(),
         e.what());
  }
}

Tokenizer Tokenizer::from_json(const nlohmann::json& tokenizer, const nlohmann::json& config) {
  if (!tokenizer.is_object()) fail("tokenizer.json: top level must be an object");
  auto impl = std::make_shared<Impl>();
  auto get = [&](const char* key) -> const nlohmann::json& { return child(tokenizer, key); };
  impl->normalizer = make_normalizer(get("normalizer"), "tokenizer.json normalizer");
  impl->pre_tokenizer = make_pre_tokenizer(get("pre_tokenizer"), "tokenizer.json pre_tokenizer");
  if (!tokenizer.contains("model")) fail("tokenizer.json: missing field \"model\"");
  impl->model = std::make_unique<BpeModel>(tokenizer["model"], "tokenizer.json model");
  impl->added =
      AddedVocabulary(get("added_tokens"), impl->normalizer.get(), "tokenizer.json added_tokens");
  impl->post_processor = PostProcessor(get("post_processor"), "tokenizer.json post_processor");
  impl->decoder = make_decoder(get("decoder"), "tokenizer.json decoder");

  int32_t max_id = impl->model->max_id();
  for (const auto& t : impl->added.tokens()) {
    max_id = std::max(max_id, t.id);
    if (t.special) impl->special_contents.insert(t.content);
  }
  impl->vocab_size = max_id + 1;

  const std::string where = "tokenizer_config.json";
  if (!config.is_null() && !config.is_object()) fail("{}: top level must be an object", where);
  impl->chat_template = config_chat_template(config, where);
  impl->bos_token = config_token(config, "bos_token", where);
  impl->eos_token = config_token(config, "eos_token", where);
  Tokenizer result(impl);
  auto resolve = [&](const std::string& token, const char* key) -> std::optional<int32_t> {
    if (token.empty()) return std::nullopt;
    auto id = result.token_to_id(token);
    if (!id) fail("{}: {} \"{}\" is not a token of tokenizer.json", where, key, token);
    return id;
  };
  impl->bos_id = resolve(impl->bos_token, "bos_token");
  if (!impl->bos_id) impl->bos_id = impl->post_processor.leading_special_id();
  impl->eos_id = resolve(impl->eos_token, "eos_token");
  return result;
}

Tokenizer Tokenizer::make_byte_tokenizer() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level::byte_to_char(uint8_t(b))] = b;
  auto special = [](int id, const char* content) {
    return nlohmann::json{{"id", id},        {"content", content}, {"single_word", false},
                          {"lstrip", false}, {"rstrip", false},    {"normalized", false},
                          {"special", true}};
  };
  nlohmann::json tokenizer = {
      {"added_tokens", {special(256, "<s>"), special(257, "</s>")}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {256}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
  };
  nlohmann::json config = {{"bos_token", "<s>"}, {"eos_token", "</s>"}};
  return from_json(tokenizer, config);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::string valid;
  if (!utf8::is_valid(text)) {
    valid = utf8::to_valid(text);
    text = valid;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  for (const auto& s : impl_->added.split(text, false)) {
    if (s.token_id) {
      ids.push_back(*s.token_id);
    } else {
      impl_->encode_plain(text.substr(s.begin, s.end - s.begin), s.begin == 0, ids);
    }
  }
  if (add_special_tokens) ids = impl_->post_processor.apply(std::move(ids));
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* token = nullptr;
    if (const AddedToken* added = impl_->added.find_id(id)) {
      token = &added->content;
    } else {
      token = impl_->model->id_to_token(id);
    }
    if (token == nullptr) continue;
    if (skip_special_tokens && impl_->special_contents.count(*token)) continue;
    tokens.push_back(*token);
  }
  if (!impl_->decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  std::string out;
  for (auto& piece : impl_->decoder->decode_chain(std::move(tokens))) out += piece;
  return out;
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto id = impl_->added.find_content(token)) return id;
  return impl_->model->token_to_id(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  if (const AddedToken* added = impl_->added.find_id(id)) return added->content;
  if (const std::string* token = impl_->model->id_to_token(id)) return *token;
  fail("token id {} is out of range (vocab size {})", id, impl_->vocab_size);
}

bool Tokenizer::is_special(int32_t id) const {
  const AddedToken* added = impl_->added.find_id(id);
  return added != nullptr && added->special;
}

std::optional<int32_t> Tokenizer::bos_token_id() const { return impl_->bos_id; }
std::optional<int32_t> Tokenizer::eos_token_id() const { return impl_->eos_id; }
const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }
const std::string& Tokenizer::bos_token() const { return impl_->bos_token; }
const std::string& Tokenizer::eos_token() const { return impl_->eos_token; }

}  // namespace relayllm
