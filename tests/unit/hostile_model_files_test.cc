// Hostile model folders: config.json, tokenizer.json, tokenizer_config.json and safetensors
// files written to break the loader (sizes that overflow, numbers that are not finite, ids
// beyond 32 bits, nesting that recurses without end, aliased or surplus tensors). Each class
// must end in one line naming the file and the field, before anything big is allocated.
// (GGUF's counterparts are in gguf_test.cc, next to its writer.)
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "../common/temp_dir.h"
#include "relayllm/common/bounded_json.h"
#include "relayllm/common/error.h"
#include "relayllm/formats/safetensors.h"
#include "relayllm/model/model_config.h"
#include "relayllm/model/model_limits.h"
#include "relayllm/model/model_loader.h"
#include "relayllm/model/model_weights.h"
#include "relayllm/tokenizer/tokenizer.h"
#include "safetensors_writer.h"

namespace relayllm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// This file's scratch directories (relayllm_hostile_<suite>_<test>_<n>).
struct TempDir : testing::TempDir {
  TempDir() : testing::TempDir("relayllm_hostile") {}
};

using testing::error_of;

// The error must be one line holding every part.
template <typename Fn>
void expect_refused(Fn&& fn, std::initializer_list<std::string> parts) {
  std::string message = error_of(fn);
  for (const std::string& part : parts)
    EXPECT_NE(message.find(part), std::string::npos)
        << "message: " << message << "\nmissing: " << part;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// ---------------------------------------------------------------- config.json

// Every integer size field, set far beyond any model, is refused naming the field.
TEST(HostileConfig, EverySizeFieldIsRangeChecked) {
  for (const char* field : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "num_key_value_heads", "head_dim",
                            "max_position_embeddings", "sliding_window"}) {
    for (int64_t value : {int64_t(1) << 62, int64_t(1) << 40, int64_t(100000000)}) {
      SCOPED_TRACE(fmt::format("{} = {}", field, value));
      json j = test::tiny_config_json(std::string(field) == "sliding_window" ? "MistralForCausalLM"
                                                                             : "LlamaForCausalLM");
      j[field] = value;
      if (std::string(field) == "num_attention_heads") {
        j["num_key_value_heads"] = value;
        j["head_dim"] = 8;
      }
      expect_refused([&] { parse_model_config_json(j, "config.json"); },
                     {"config.json", field, std::to_string(value)});
    }
  }
  json j = test::tiny_config_json();
  j["max_position_embeddings"] = uint64_t(1) << 63;  // beyond int64: never wrapped negative
  expect_refused([&] { parse_model_config_json(j, "config.json"); },
                 {"max_position_embeddings", "9223372036854775808", "out of range"});
}

// Real fields that are not finite or out of range, as a file writes them (1e400 overflows a
// double while parsing; Python's json writes Infinity), are refused naming the field.
TEST(HostileConfig, EveryRealFieldMustBeFiniteAndInRange) {
  TempDir dir;
  const fs::path path = dir.path() / "config.json";
  for (const char* field : {"rms_norm_eps", "rope_theta"}) {
    for (const char* value : {"1e400", "-1e400"}) {
      SCOPED_TRACE(fmt::format("{} = {}", field, value));
      std::string text = test::tiny_config_json().dump();
      text.insert(text.size() - 1, fmt::format(", \"{}\": {}", field, value));
      write_text(path, text);
      expect_refused([&] { parse_model_config(path); },
                     {"config.json", field, value, "out of range"});
    }
    for (double value : {1e300, -1.0, 0.0}) {
      json j = test::tiny_config_json();
      j[field] = value;
      expect_refused([&] { parse_model_config_json(j, "config.json"); }, {"config.json", field});
    }
  }
  write_text(path, R"({"rms_norm_eps": Infinity})");
  expect_refused([&] { parse_model_config(path); }, {"config.json", "invalid JSON"});
  json scaled = test::tiny_config_json();
  scaled["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 1e300}};
  expect_refused([&] { parse_model_config_json(scaled, "config.json"); },
                 {"config.json", "factor"});
}

TEST(HostileConfig, DeeplyNestedConfigIsRefusedAtParse) {
  TempDir dir;
  const fs::path path = dir.path() / "config.json";
  std::string text = test::tiny_config_json().dump();
  text.insert(text.size() - 1,
              ", \"rope_scaling\": " + std::string(100000, '[') + std::string(100000, ']'));
  write_text(path, text);
  expect_refused([&] { parse_model_config(path); }, {"config.json", "nests deeper than 64"});
}

// Sizes are multiplied in checked arithmetic; a model that cannot fit is refused naming the
// memory it would need, before any allocation.
TEST(HostileConfig, MemoryIsCheckedBeforeAllocating) {
  ModelConfig c = parse_model_config_json(test::tiny_config_json(), "config.json");
  std::optional<uint64_t> bytes = model_host_bytes(c, c.max_position_embeddings);
  ASSERT_TRUE(bytes.has_value());
  EXPECT_GT(*bytes, uint64_t(40 * 32 * 4));
  EXPECT_NO_THROW(check_model_fits(c, "config.json", uint64_t(1) << 30));
  expect_refused([&] { check_model_fits(c, "config.json", 1000); },
                 {"config.json", "of memory", "2 layers", "hidden 32"});

  ModelConfig huge = c;
  huge.num_layers = 4000;
  huge.hidden_size = huge.intermediate_size = 1 << 20;
  huge.vocab_size = 1 << 24;
  expect_refused([&] { check_model_fits(huge, "config.json"); },
                 {"config.json", "of memory", "4000 layers", "more than the"});
  // Values a validated config never holds still cannot wrap the product.
  ModelConfig absurd = c;
  absurd.hidden_size = absurd.num_layers = absurd.vocab_size = int64_t(1) << 40;
  EXPECT_FALSE(model_host_bytes(absurd, 1).has_value());
  expect_refused([&] { check_model_fits(absurd, "config.json"); }, {"beyond 2^64"});
}

// A 100000-layer config with big layers is refused by load_model with the memory named, fast.
TEST(HostileConfig, LoadModelRefusesBeforeReadingWeights) {
  TempDir dir;
  json j = test::tiny_config_json();
  j["num_hidden_layers"] = 4000;
  j["hidden_size"] = 16384;
  j["intermediate_size"] = 65536;
  j["num_attention_heads"] = 128;
  j["num_key_value_heads"] = 8;
  test::write_json(dir.path() / "config.json", j);
  auto start = std::chrono::steady_clock::now();
  expect_refused([&] { load_model(dir.path(), LoadFormat::kDummy, 0); },
                 {"config.json", "of memory", "4000 layers"});
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  j["num_hidden_layers"] = 100000;
  test::write_json(dir.path() / "config.json", j);
  expect_refused([&] { load_model(dir.path(), LoadFormat::kDummy, 0); },
                 {"config.json", "num_hidden_layers = 100000 is out of range"});
}

TEST(HostileConfig, TokenIdsBeyond32BitsAreRefused) {
  for (const char* field : {"bos_token_id", "eos_token_id"}) {
    for (uint64_t id : {uint64_t(1) << 32, (uint64_t(1) << 32) + 2, uint64_t(1) << 63}) {
      json j = test::tiny_config_json();
      j[field] = id;
      expect_refused([&] { parse_model_config_json(j, "config.json"); },
                     {"config.json", field, std::to_string(id)});
      j[field] = json::array({2, id});
      expect_refused([&] { parse_model_config_json(j, "config.json"); }, {"config.json", field});
    }
  }
}

// ---------------------------------------------------------------- tokenizer.json

json tiny_tokenizer() {
  json vocab = json::object();
  for (char c = 'a'; c <= 'z'; ++c) vocab[std::string(1, c)] = int(c - 'a');
  return json{{"added_tokens", json::array({{{"id", 26}, {"content", "<s>"}, {"special", true}}})},
              {"normalizer", nullptr},
              {"pre_tokenizer", nullptr},
              {"decoder", nullptr},
              {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}}};
}

json nested_sequence(const char* list_key, const json& leaf, int depth) {
  json node = leaf;
  for (int i = 0; i < depth; ++i) node = {{"type", "Sequence"}, {list_key, json::array({node})}};
  return node;
}

struct Component {
  const char* field;
  const char* list_key;
  json leaf;
};

const std::vector<Component>& components() {
  static const std::vector<Component> kComponents = {
      {"normalizer", "normalizers", {{"type", "NFC"}}},
      {"pre_tokenizer", "pretokenizers", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
      {"decoder", "decoders", {{"type", "ByteLevel"}}},
      {"post_processor", "processors", {{"type", "ByteLevel"}}},
  };
  return kComponents;
}

// Every recursive component is bounded: a few levels load, a few dozen are refused naming
// the component, and a 30,000-deep file is refused at parse time, quickly.
TEST(HostileTokenizer, SequenceNestingIsBoundedForEveryComponent) {
  TempDir dir;
  for (const Component& c : components()) {
    SCOPED_TRACE(c.field);
    json ok = tiny_tokenizer();
    ok[c.field] = nested_sequence(c.list_key, c.leaf, 3);
    EXPECT_NO_THROW(Tokenizer::from_json(ok, json::object()));

    json deep = tiny_tokenizer();
    deep[c.field] = nested_sequence(c.list_key, c.leaf, 20);
    expect_refused([&] { Tokenizer::from_json(deep, json::object()); },
                   {std::string("tokenizer.json ") + c.field, "Sequence nested deeper than 16"});

    // 30,000 levels, written as text (building it as a json value would itself recurse).
    std::string prefix, suffix;
    for (int i = 0; i < 30000; ++i) {
      prefix += fmt::format("{{\"type\": \"Sequence\", \"{}\": [", c.list_key);
      suffix += "]}";
    }
    std::string text = tiny_tokenizer().dump();
    text.insert(text.size() - 1,
                fmt::format(", \"{}\": {}{}{}", c.field, prefix, c.leaf.dump(), suffix));
    const fs::path path = dir.path() / "tokenizer.json";
    write_text(path, text);
    auto start = std::chrono::steady_clock::now();
    expect_refused([&] { Tokenizer::from_files(path, dir.path() / "none.json"); },
                   {"tokenizer.json", "nests deeper than 64"});
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  }
}

// Ids above 32 bits were silently truncated to other tokens; ids that fit but would size an
// id table in gigabytes are refused too.
TEST(HostileTokenizer, IdsThatDoNotFitAreRefused) {
  for (uint64_t id :
       {uint64_t(1) << 32, (uint64_t(1) << 32) + 3, uint64_t(1) << 63, uint64_t(-1)}) {
    SCOPED_TRACE(id);
    json vocab_id = tiny_tokenizer();
    vocab_id["model"]["vocab"]["zz"] = id;
    expect_refused([&] { Tokenizer::from_json(vocab_id, json::object()); },
                   {"tokenizer.json model.vocab", "zz", std::to_string(id)});

    json added_id = tiny_tokenizer();
    added_id["added_tokens"][0]["id"] = id;
    expect_refused([&] { Tokenizer::from_json(added_id, json::object()); },
                   {"tokenizer.json added_tokens[0]", "\"id\"", std::to_string(id)});

    json special_ids = tiny_tokenizer();
    special_ids["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}}},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {id}}, {"tokens", {"<s>"}}}}}}};
    expect_refused([&] { Tokenizer::from_json(special_ids, json::object()); },
                   {"tokenizer.json post_processor", "ids", std::to_string(id)});
  }
  for (int64_t id : {int64_t(INT32_MAX), int64_t(1) << 24}) {
    json vocab_id = tiny_tokenizer();
    vocab_id["model"]["vocab"]["zz"] = id;
    expect_refused([&] { Tokenizer::from_json(vocab_id, json::object()); },
                   {"tokenizer.json model.vocab", std::to_string(id)});
    json added_id = tiny_tokenizer();
    added_id["added_tokens"][0]["id"] = id;
    expect_refused([&] { Tokenizer::from_json(added_id, json::object()); },
                   {"tokenizer.json added_tokens[0]", std::to_string(id), "out of range"});
  }
  json negative = tiny_tokenizer();
  negative["added_tokens"][0]["id"] = -1;
  expect_refused([&] { Tokenizer::from_json(negative, json::object()); },
                 {"added_tokens[0]", "-1"});
}

TEST(HostileTokenizer, TokenizerConfigNestingAndNumbers) {
  TempDir dir;
  write_text(dir.path() / "tokenizer.json", tiny_tokenizer().dump());
  write_text(dir.path() / "tokenizer_config.json",
             "{\"bos_token\": " + std::string(50000, '[') + std::string(50000, ']') + "}");
  expect_refused(
      [&] {
        Tokenizer::from_files(dir.path() / "tokenizer.json", dir.path() / "tokenizer_config.json");
      },
      {"tokenizer_config.json", "nests deeper than 64"});
  write_text(dir.path() / "tokenizer_config.json", R"({"model_max_length": 1e999})");
  expect_refused(
      [&] {
        Tokenizer::from_files(dir.path() / "tokenizer.json", dir.path() / "tokenizer_config.json");
      },
      {"tokenizer_config.json", "1e999", "model_max_length"});
}

// ---------------------------------------------------------------- safetensors

TEST(HostileSafetensors, OverlappingDataRangesAreRefused) {
  TempDir dir;
  const fs::path path = dir.path() / "model.safetensors";
  // Two tensors declared on the same bytes, and one straddling another's end.
  for (auto offsets : {std::pair<int, int>{0, 0}, std::pair<int, int>{0, 8}}) {
    json header = {{"a", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 16}}}},
                   {"b",
                    {{"dtype", "F32"},
                     {"shape", {4}},
                     {"data_offsets", {offsets.second, offsets.second + 16}}}}};
    std::string text = header.dump();
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    uint64_t length = text.size();
    out.write(reinterpret_cast<const char*>(&length), 8);
    out << text << std::string(32, '\0');
    out.close();
    expect_refused([&] { SafetensorsFile f(path); },
                   {"model.safetensors", "tensors a and b overlap"});
  }
  // Adjacent ranges and empty tensors are fine.
  test::write_safetensors(path, {test::f32_blob("a", {2}, {1, 2}), test::f32_blob("e", {0}, {}),
                                 test::f32_blob("b", {2}, {3, 4})});
  EXPECT_NO_THROW(SafetensorsFile f(path));
}

TEST(HostileSafetensors, DeepHeaderIsRefused) {
  TempDir dir;
  const fs::path path = dir.path() / "model.safetensors";
  std::string text = "{\"a\": " + std::string(40000, '[') + std::string(40000, ']') + "}";
  std::ofstream out(path, std::ios::binary);
  uint64_t length = text.size();
  out.write(reinterpret_cast<const char*>(&length), 8);
  out << text;
  out.close();
  expect_refused([&] { SafetensorsFile f(path); }, {"model.safetensors header", "nests deeper"});
}

TEST(HostileSafetensors, LayerCountSmallerThanTheTensorsPresent) {
  TempDir dir;
  json j = test::tiny_config_json();
  ModelConfig full = parse_model_config_json(j, "config.json");
  ModelWeights weights = make_dummy_weights(full, 1);
  test::write_safetensors(dir.path() / "model.safetensors", test::weight_blobs(weights, full));
  j["num_hidden_layers"] = 1;
  test::write_json(dir.path() / "config.json", j);
  ModelConfig fewer = parse_model_config(dir.path() / "config.json");
  expect_refused([&] { load_weights(dir.path(), fewer); },
                 {"model.safetensors", "model.layers.1.", "num_hidden_layers = 1"});
  // The layer index of names is read exactly: other prefixes and non-numbers are not layers.
  EXPECT_EQ(tensor_layer_index("model.layers.12.mlp.up_proj.weight", "model.layers."), 12);
  EXPECT_EQ(tensor_layer_index("model.layers.x.mlp", "model.layers."), std::nullopt);
  EXPECT_EQ(tensor_layer_index("model.layers.3", "model.layers."), std::nullopt);
  EXPECT_EQ(tensor_layer_index("lm_head.weight", "model.layers."), std::nullopt);
  EXPECT_EQ(tensor_layer_index("model.layers.99999999999999999999999.a", "model.layers."),
            INT64_MAX);
}

// ---------------------------------------------------------------- the parser itself

TEST(BoundedJson, DepthNumbersAndErrors) {
  EXPECT_EQ(parse_bounded_json(R"({"a": [1, {"b": 2.5}]})", "x")["a"][1]["b"], 2.5);
  EXPECT_NO_THROW(parse_bounded_json(std::string(64, '[') + std::string(64, ']'), "x"));
  expect_refused([&] { parse_bounded_json(std::string(65, '[') + std::string(65, ']'), "x"); },
                 {"x: JSON nests deeper than 64"});
  expect_refused([&] { parse_bounded_json(std::string(10, '['), "x", 4); },
                 {"x: JSON nests deeper than 4"});
  expect_refused([&] { parse_bounded_json(R"({"t": 1e400})", "x"); },
                 {"x: number 1e400 is out of range (in field \"t\")"});
  expect_refused([&] { parse_bounded_json("{\"a\":", "x"); }, {"x: invalid JSON"});
  expect_refused([&] { parse_bounded_json("{} trailing", "x"); }, {"x: invalid JSON"});
}

}  // namespace
}  // namespace relayllm
