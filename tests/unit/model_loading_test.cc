// Model folder loading: config.json / generation_config.json parsing, rope
// frequencies, safetensors parsing (single and sharded), weight loading with shape
// checks, dummy weights, and every bad-input error naming its file and field/tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "../common/temp_dir.h"
#include "relayllm/common/error.h"
#include "relayllm/common/half.h"
#include "relayllm/common/thread_pool.h"
#include "relayllm/formats/safetensors.h"
#include "relayllm/model/generation_config.h"
#include "relayllm/model/model_config.h"
#include "relayllm/model/model_weights.h"
#include "safetensors_writer.h"

namespace relayllm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::TensorBlob;

// A fresh folder per test, removed afterwards.
// This file's scratch directories (relayllm_model_<suite>_<test>_<n>).
struct TempDir : testing::TempDir {
  TempDir() : testing::TempDir("relayllm_model") {}
};

// Runs fn, expects an Error whose message contains every one of `parts`.
template <typename Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "no Error thrown";
  } catch (const Error& error) {
    std::string message = error.what();
    for (const std::string& part : parts)
      EXPECT_NE(message.find(part), std::string::npos)
          << "message: " << message << "\nmissing: " << part;
  }
}

ModelConfig config_from(const json& j) { return parse_model_config_json(j, "config.json"); }

// ---------------------------------------------------------------- config.json

TEST(ModelConfig, LlamaClassicRopeKeys) {
  ModelConfig c = config_from(test::tiny_config_json());
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.vocab_size, 40);
  EXPECT_EQ(c.hidden_size, 32);
  EXPECT_EQ(c.intermediate_size, 48);
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.max_position_embeddings, 128);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.rope.type, RopeType::kDefault);
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.torch_dtype, "float32");
  ASSERT_TRUE(c.bos_token_id.has_value());
  EXPECT_EQ(*c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{2});
  EXPECT_FALSE(c.sliding_window.has_value());
}

TEST(ModelConfig, Llama3ScalingClassicAndRopeParameters) {
  json classic = test::tiny_config_json();
  classic["rope_theta"] = 500000.0;
  classic["rope_scaling"] = {{"rope_type", "llama3"},
                             {"factor", 8.0},
                             {"low_freq_factor", 1.0},
                             {"high_freq_factor", 4.0},
                             {"original_max_position_embeddings", 8192}};
  classic["tie_word_embeddings"] = true;
  classic["eos_token_id"] = {128001, 128008, 128009};
  classic.erase("torch_dtype");
  classic["dtype"] = "bfloat16";

  json v5 = classic;
  v5.erase("rope_theta");
  v5.erase("rope_scaling");
  v5["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 500000.0},
                           {"factor", 8.0},           {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  for (const json& j : {classic, v5}) {
    ModelConfig c = config_from(j);
    EXPECT_EQ(c.rope.type, RopeType::kLlama3);
    EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);
    EXPECT_DOUBLE_EQ(c.rope.factor, 8.0);
    EXPECT_DOUBLE_EQ(c.rope.low_freq_factor, 1.0);
    EXPECT_DOUBLE_EQ(c.rope.high_freq_factor, 4.0);
    EXPECT_EQ(c.rope.original_max_position_embeddings, 8192);
    EXPECT_TRUE(c.tie_word_embeddings);
    EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{128001, 128008, 128009}));
    EXPECT_EQ(c.torch_dtype, "bfloat16");
  }
}

TEST(ModelConfig, LegacyTypeKeyAndLinearDynamic) {
  json j = test::tiny_config_json();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  ModelConfig c = config_from(j);
  EXPECT_EQ(c.rope.type, RopeType::kLinear);
  EXPECT_DOUBLE_EQ(c.rope.factor, 4.0);

  j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  EXPECT_EQ(config_from(j).rope.type, RopeType::kDynamic);

  // rope_parameters wins and carries its own theta.
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
  c = config_from(j);
  EXPECT_EQ(c.rope.type, RopeType::kDefault);
  EXPECT_DOUBLE_EQ(c.rope.theta, 1e6);

  // Per-layer-type nesting with identical entries collapses to one rope.
  j["rope_parameters"] = {{"full_attention", {{"rope_type", "default"}, {"rope_theta", 5e5}}}};
  EXPECT_DOUBLE_EQ(config_from(j).rope.theta, 5e5);
}

TEST(ModelConfig, MistralQwen2Qwen3Flags) {
  json mistral = test::tiny_config_json("MistralForCausalLM");
  mistral["sliding_window"] = 4096;
  ModelConfig m = config_from(mistral);
  EXPECT_EQ(m.architecture, "MistralForCausalLM");
  EXPECT_FALSE(m.qkv_bias);
  EXPECT_FALSE(m.qk_norm);
  ASSERT_TRUE(m.sliding_window.has_value());
  EXPECT_EQ(*m.sliding_window, 4096);
  mistral["sliding_window"] = nullptr;
  EXPECT_FALSE(config_from(mistral).sliding_window.has_value());

  json qwen2 = test::tiny_config_json("Qwen2ForCausalLM");
  qwen2["use_sliding_window"] = false;
  qwen2["sliding_window"] = 32768;
  ModelConfig q2 = config_from(qwen2);
  EXPECT_TRUE(q2.qkv_bias);
  EXPECT_FALSE(q2.qk_norm);
  EXPECT_FALSE(q2.sliding_window.has_value());

  json qwen3 = test::tiny_config_json("Qwen3ForCausalLM");
  qwen3["head_dim"] = 16;  // != hidden_size / num_heads = 8
  qwen3.erase("rope_theta");
  qwen3["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1000000.0}};
  ModelConfig q3 = config_from(qwen3);
  EXPECT_FALSE(q3.qkv_bias);
  EXPECT_TRUE(q3.qk_norm);
  EXPECT_EQ(q3.head_dim, 16);
  EXPECT_DOUBLE_EQ(q3.rope.theta, 1e6);
  EXPECT_EQ(rope_inverse_frequencies(q3).size(), 8u);
}

TEST(ModelConfig, DefaultsWhenOptionalFieldsAbsent) {
  json j = test::tiny_config_json();
  for (const char* key : {"num_key_value_heads", "rope_theta", "rms_norm_eps",
                          "tie_word_embeddings", "torch_dtype", "bos_token_id", "eos_token_id"})
    j.erase(key);
  ModelConfig c = config_from(j);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_TRUE(c.torch_dtype.empty());
  EXPECT_FALSE(c.bos_token_id.has_value());
  EXPECT_TRUE(c.eos_token_ids.empty());
}

TEST(ModelConfig, Errors) {
  json unknown = test::tiny_config_json("GPT2LMHeadModel");
  expect_error([&] { config_from(unknown); }, {"config.json", "GPT2LMHeadModel"});

  json yarn = test::tiny_config_json();
  yarn["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  expect_error([&] { config_from(yarn); }, {"config.json", "yarn", "rope_scaling.rope_type"});

  json longrope = test::tiny_config_json();
  longrope["rope_parameters"] = {{"rope_type", "longrope"}, {"rope_theta", 1e4}};
  expect_error([&] { config_from(longrope); }, {"config.json", "longrope", "rope_parameters"});

  json llama3_incomplete = test::tiny_config_json();
  llama3_incomplete["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  expect_error([&] { config_from(llama3_incomplete); }, {"config.json", "low_freq_factor"});

  json missing = test::tiny_config_json();
  missing.erase("hidden_size");
  expect_error([&] { config_from(missing); }, {"config.json", "hidden_size"});

  json wrong_type = test::tiny_config_json();
  wrong_type["num_hidden_layers"] = "two";
  expect_error([&] { config_from(wrong_type); }, {"config.json", "num_hidden_layers"});

  json gqa = test::tiny_config_json();
  gqa["num_key_value_heads"] = 3;
  expect_error([&] { config_from(gqa); }, {"config.json", "num_key_value_heads"});

  json act = test::tiny_config_json();
  act["hidden_act"] = "gelu";
  expect_error([&] { config_from(act); }, {"config.json", "hidden_act", "gelu"});

  json bias = test::tiny_config_json();
  bias["attention_bias"] = true;
  expect_error([&] { config_from(bias); }, {"config.json", "attention_bias"});
}

TEST(ModelConfig, FileErrors) {
  TempDir dir;
  expect_error([&] { parse_model_config(dir.path() / "config.json"); },
               {"config.json", "not found"});
  std::ofstream(dir.path() / "config.json") << "{\"architectures\": [";
  expect_error([&] { parse_model_config(dir.path() / "config.json"); },
               {"config.json", "invalid JSON"});
  test::write_json(dir.path() / "config.json", test::tiny_config_json());
  EXPECT_EQ(parse_model_config(dir.path() / "config.json").num_layers, 2);
}

// ---------------------------------------------------------------- rope

TEST(Rope, DefaultMatchesFormula) {
  ModelConfig c = config_from(test::tiny_config_json());  // head_dim 8, theta 1e4
  std::vector<double> f = rope_inverse_frequencies(c);
  ASSERT_EQ(f.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(f[i], std::pow(10000.0, -2.0 * i / 8));
}

// Reference values computed with HF transformers' llama3 formula in float64.
TEST(Rope, Llama3MatchesHfFormula) {
  json j = test::tiny_config_json();
  j["hidden_size"] = 128 * 4;
  j["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 500000.0},
                          {"factor", 8.0},           {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  ModelConfig c = config_from(j);  // head_dim 128, as Llama 3.1 8B
  std::vector<double> f = rope_inverse_frequencies(c);
  ASSERT_EQ(f.size(), 64u);
  const std::pair<int, double> expected[] = {
      {0, 1.0},
      {10, 0.12868737343265052},  // high frequency: unchanged
      {20, 0.016560440080994446},
      {30, 0.0013718935677611381},  // 30: smoothed band
      {40, 3.428102195952591e-05},
      {45, 1.2297638677963614e-05},  // low frequency: / factor
      {50, 4.411534674558404e-06},
      {63, 3.068925988914511e-07}};
  for (auto [i, value] : expected) EXPECT_NEAR(f[size_t(i)], value, value * 1e-12) << "index " << i;

  // The fixture's small original context puts bands at indices 0 / 1 / 2..7 for head_dim 16.
  j["hidden_size"] = 64;
  j["rope_parameters"]["original_max_position_embeddings"] = 64;
  std::vector<double> small = rope_inverse_frequencies(config_from(j));
  const double small_expected[] = {1.0,
                                   0.0794030091792082,
                                   0.004700753866357992,
                                   0.0009115830921521386,
                                   0.00017677669529663688,
                                   3.428102195952591e-05,
                                   6.647869871181236e-06,
                                   1.2891731721515574e-06};
  ASSERT_EQ(small.size(), 8u);
  for (size_t i = 0; i < 8; ++i)
    EXPECT_NEAR(small[i], small_expected[i], small_expected[i] * 1e-12) << i;
}

TEST(Rope, LinearAndDynamic) {
  json j = test::tiny_config_json();
  j["hidden_size"] = 64;  // head_dim 16
  j["max_position_embeddings"] = 256;
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  EXPECT_NEAR(rope_inverse_frequencies(config_from(j))[3], 0.007905694150420948, 1e-15);

  j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  ModelConfig c = config_from(j);
  std::vector<double> plain = rope_inverse_frequencies(c);
  for (size_t i = 0; i < plain.size(); ++i)
    EXPECT_DOUBLE_EQ(plain[i], std::pow(10000.0, -2.0 * double(i) / 16));
  EXPECT_EQ(rope_inverse_frequencies(c, 200), plain);  // within max_position_embeddings
  EXPECT_NEAR(rope_inverse_frequencies(c, 512)[5], 0.001442776645751933, 1e-15);
}

// ---------------------------------------------------------------- generation_config.json

TEST(GenerationConfig, ParsesOptionalFields) {
  GenerationConfig g = parse_generation_config_json({{"bos_token_id", 128000},
                                                     {"eos_token_id", {128001, 128009}},
                                                     {"do_sample", true},
                                                     {"temperature", 0.6},
                                                     {"top_p", 0.9},
                                                     {"top_k", 20},
                                                     {"repetition_penalty", 1.05},
                                                     {"max_new_tokens", 256},
                                                     {"transformers_version", "4.45.0"}},
                                                    "generation_config.json");
  EXPECT_EQ(g.eos_token_ids, (std::vector<int32_t>{128001, 128009}));
  EXPECT_EQ(g.bos_token_id, 128000);
  EXPECT_EQ(g.do_sample, true);
  EXPECT_DOUBLE_EQ(*g.temperature, 0.6);
  EXPECT_DOUBLE_EQ(*g.top_p, 0.9);
  EXPECT_EQ(g.top_k, 20);
  EXPECT_DOUBLE_EQ(*g.repetition_penalty, 1.05);
  EXPECT_EQ(g.max_new_tokens, 256);

  GenerationConfig empty = parse_generation_config_json(json::object(), "generation_config.json");
  EXPECT_FALSE(empty.eos_token_ids || empty.temperature || empty.top_k || empty.max_new_tokens);
  GenerationConfig single =
      parse_generation_config_json({{"eos_token_id", 2}}, "generation_config.json");
  EXPECT_EQ(single.eos_token_ids, std::vector<int32_t>{2});

  expect_error(
      [] {
        parse_generation_config_json({{"top_p", 1.5}}, "generation_config.json");
      },
      {"generation_config.json", "top_p"});
  expect_error(
      [] {
        parse_generation_config_json({{"temperature", "hot"}}, "generation_config.json");
      },
      {"generation_config.json", "temperature"});

  TempDir dir;
  EXPECT_FALSE(load_generation_config(dir.path()).has_value());
  test::write_json(dir.path() / "generation_config.json", {{"eos_token_id", 7}});
  EXPECT_EQ(load_generation_config(dir.path())->eos_token_ids, std::vector<int32_t>{7});
}

// ---------------------------------------------------------------- safetensors

TEST(Safetensors, ConvertsF32F16Bf16) {
  TempDir dir;
  const std::vector<float> values = {0.0f, 1.0f, -2.5f, 0.333251953125f, 65504.0f, -1.0e-3f};
  // Odd header padding leaves the data unaligned, which the reader must tolerate.
  test::write_safetensors(
      dir.path() / "t.safetensors",
      {test::f32_blob("a", {2, 3}, values), test::half_blob("b", {6}, values, false),
       test::half_blob("c", {3, 2}, values, true)},
      3);
  SafetensorsFile file(dir.path() / "t.safetensors");
  ASSERT_EQ(file.tensors().size(), 3u);
  const TensorView* a = file.find("a");
  const TensorView* b = file.find("b");
  const TensorView* c = file.find("c");
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(file.find("d"), nullptr);
  EXPECT_EQ(a->dtype, SafetensorsDType::kF32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(b->dtype, SafetensorsDType::kF16);
  EXPECT_EQ(c->dtype, SafetensorsDType::kBF16);
  EXPECT_EQ(c->numel(), 6);
  EXPECT_EQ(to_float(*a), values);
  std::vector<float> fp16 = to_float(*b), bf16 = to_float(*c);
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(fp16[i], fp16_to_float(float_to_fp16(values[i]))) << i;
    EXPECT_EQ(bf16[i], bf16_to_float(float_to_bf16(values[i]))) << i;
  }
  // Exactly representable values survive both 16-bit formats.
  EXPECT_EQ(fp16[2], -2.5f);
  EXPECT_EQ(bf16[2], -2.5f);
  EXPECT_EQ(fp16[4], 65504.0f);
  EXPECT_NEAR(fp16[5], -1.0e-3f, 1e-6f);
  EXPECT_NEAR(bf16[5], -1.0e-3f, 1e-5f);
  // Partial conversion for threaded loaders.
  float part[2];
  to_float(*c, 2, 4, part);
  EXPECT_EQ(part[0], bf16[2]);
  EXPECT_EQ(part[1], bf16[3]);
}

TEST(Safetensors, BadFiles) {
  TempDir dir;
  const fs::path path = dir.path() / "model.safetensors";
  expect_error([&] { SafetensorsFile f(path); }, {"model.safetensors", "cannot open"});

  std::ofstream(path, std::ios::binary) << "abc";
  expect_error([&] { SafetensorsFile f(path); }, {"model.safetensors", "too short"});

  // Header length far beyond the file.
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    uint64_t length = 1 << 20;
    out.write(reinterpret_cast<const char*>(&length), 8);
    out << "{}";
  }
  expect_error([&] { SafetensorsFile f(path); },
               {"model.safetensors", "header length 1048576", "exceeds"});

  // Truncated: the data section ends before the last tensor does.
  test::write_safetensors(path, {test::f32_blob("w", {4, 4}, std::vector<float>(16, 1.0f))});
  fs::resize_file(path, fs::file_size(path) - 10);
  expect_error([&] { SafetensorsFile f(path); }, {"model.safetensors", "tensor w", "truncated"});

  // Unknown dtype is named.
  test::write_safetensors(path, {TensorBlob{"odd", "F17", {2}, std::vector<uint8_t>(4)}});
  expect_error([&] { SafetensorsFile f(path); },
               {"model.safetensors", "tensor odd", "unknown dtype \"F17\""});

  // Offsets inconsistent with shape x dtype size.
  test::write_safetensors(path, {TensorBlob{"short", "F32", {3}, std::vector<uint8_t>(8)}});
  expect_error([&] { SafetensorsFile f(path); }, {"model.safetensors", "tensor short", "needs 12"});

  // Malformed JSON header.
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    uint64_t length = 5;
    out.write(reinterpret_cast<const char*>(&length), 8);
    out << "{\"a\":";
  }
  expect_error([&] { SafetensorsFile f(path); }, {"model.safetensors header", "invalid JSON"});

  // A known but non-float dtype parses; converting it fails naming the tensor.
  test::write_safetensors(path, {TensorBlob{"ids", "I64", {2}, std::vector<uint8_t>(16)}});
  SafetensorsFile ints(path);
  ASSERT_NE(ints.find("ids"), nullptr);
  EXPECT_EQ(ints.find("ids")->dtype, SafetensorsDType::kOther);
  expect_error([&] { to_float(*ints.find("ids")); }, {"model.safetensors", "tensor ids", "I64"});
}

// ---------------------------------------------------------------- weights

struct TinyModel {
  ModelConfig config;
  ModelWeights weights;
};

TinyModel write_model_folder(const fs::path& dir, const json& config_json,
                             const std::string& dtype = "F32", int shards = 0) {
  test::write_json(dir / "config.json", config_json);
  TinyModel model{config_from(config_json), {}};
  model.weights = make_dummy_weights(model.config, 7);
  std::vector<TensorBlob> blobs = test::weight_blobs(model.weights, model.config, dtype);
  if (shards == 0) {
    test::write_safetensors(dir / "model.safetensors", blobs);
  } else {
    std::vector<std::vector<TensorBlob>> split(static_cast<size_t>(shards));
    for (size_t i = 0; i < blobs.size(); ++i)
      split[i * size_t(shards) / blobs.size()].push_back(blobs[i]);
    test::write_sharded(dir, split);
  }
  return model;
}

void expect_same(const HostTensor& a, const HostTensor& b, const std::string& what) {
  EXPECT_EQ(a.shape, b.shape) << what;
  EXPECT_EQ(a.data, b.data) << what;
}

void expect_same(const ModelWeights& a, const ModelWeights& b) {
  expect_same(a.embed_tokens, b.embed_tokens, "embed_tokens");
  expect_same(a.final_norm, b.final_norm, "final_norm");
  expect_same(a.lm_head, b.lm_head, "lm_head");
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (size_t i = 0; i < a.layers.size(); ++i) {
    const LayerWeights &x = a.layers[i], &y = b.layers[i];
    for (auto member : {&LayerWeights::input_norm, &LayerWeights::q_proj, &LayerWeights::k_proj,
                        &LayerWeights::v_proj, &LayerWeights::o_proj, &LayerWeights::q_bias,
                        &LayerWeights::k_bias, &LayerWeights::v_bias, &LayerWeights::q_norm,
                        &LayerWeights::k_norm, &LayerWeights::post_attention_norm,
                        &LayerWeights::gate_proj, &LayerWeights::up_proj, &LayerWeights::down_proj})
      expect_same(x.*member, y.*member, fmt::format("layer {}", i));
  }
}

TEST(ModelWeights, SingleFileRoundTripAllArchitectures) {
  for (const char* arch :
       {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}) {
    TempDir dir;
    json j = test::tiny_config_json(arch);
    if (std::string(arch) == "Qwen3ForCausalLM") j["head_dim"] = 16;
    TinyModel model = write_model_folder(dir.path(), j);
    ModelConfig config = parse_model_config(dir.path() / "config.json");
    ModelWeights loaded = load_weights(dir.path(), config);
    expect_same(loaded, model.weights);
    const LayerWeights& l = loaded.layers[0];
    EXPECT_EQ(l.q_bias.empty(), !config.qkv_bias) << arch;
    EXPECT_EQ(l.q_norm.empty(), !config.qk_norm) << arch;
    EXPECT_EQ(l.q_proj.shape, (std::vector<int64_t>{config.num_heads * config.head_dim, 32}))
        << arch;
    EXPECT_EQ(l.o_proj.shape, (std::vector<int64_t>{32, config.num_heads * config.head_dim}))
        << arch;
    EXPECT_EQ(l.k_proj.shape, (std::vector<int64_t>{config.num_kv_heads * config.head_dim, 32}))
        << arch;
    EXPECT_FALSE(loaded.lm_head.empty());
  }
}

TEST(ModelWeights, ShardedBf16AndTiedEmbeddings) {
  TempDir dir;
  json j = test::tiny_config_json("Qwen2ForCausalLM");
  j["tie_word_embeddings"] = true;
  TinyModel model = write_model_folder(dir.path(), j, "BF16", 3);
  EXPECT_FALSE(fs::exists(dir.path() / "model.safetensors"));
  SafetensorsCheckpoint checkpoint(dir.path());
  EXPECT_EQ(checkpoint.files().size(), 3u);
  EXPECT_EQ(checkpoint.source().filename(), "model.safetensors.index.json");
  ModelWeights loaded = load_weights(dir.path(), model.config);
  EXPECT_TRUE(loaded.lm_head.empty());
  ASSERT_EQ(loaded.embed_tokens.data.size(), model.weights.embed_tokens.data.size());
  for (size_t i = 0; i < loaded.embed_tokens.data.size(); ++i)
    ASSERT_EQ(loaded.embed_tokens.data[i],
              bf16_to_float(float_to_bf16(model.weights.embed_tokens.data[i])));
  const HostTensor& bias = loaded.layers[1].v_bias;
  ASSERT_EQ(bias.shape, (std::vector<int64_t>{16}));
  EXPECT_EQ(bias.data[3], bf16_to_float(float_to_bf16(model.weights.layers[1].v_bias.data[3])));
}

TEST(ModelWeights, ExtraTensorsIgnoredAndF16Loads) {
  TempDir dir;
  json j = test::tiny_config_json();
  test::write_json(dir.path() / "config.json", j);
  ModelConfig config = config_from(j);
  ModelWeights weights = make_dummy_weights(config, 3);
  std::vector<TensorBlob> blobs = test::weight_blobs(weights, config, "F16");
  blobs.push_back(test::f32_blob("model.layers.0.self_attn.rotary_emb.inv_freq", {4},
                                 {1, 0.1f, 0.01f, 0.001f}));
  blobs.push_back(TensorBlob{"step", "I64", {1}, std::vector<uint8_t>(8)});
  test::write_safetensors(dir.path() / "model.safetensors", blobs);
  ModelWeights loaded = load_weights(dir.path(), config);
  EXPECT_EQ(loaded.layers[1].down_proj.data[5],
            fp16_to_float(float_to_fp16(weights.layers[1].down_proj.data[5])));
}

TEST(ModelWeights, MissingAndMisshapenTensors) {
  TempDir dir;
  json j = test::tiny_config_json();
  ModelConfig config = config_from(j);
  ModelWeights weights = make_dummy_weights(config, 1);
  std::vector<TensorBlob> blobs = test::weight_blobs(weights, config);

  // No checkpoint at all.
  expect_error([&] { load_weights(dir.path(), config); },
               {"model.safetensors", dir.path().string()});

  // Missing tensor.
  std::vector<TensorBlob> missing;
  for (const TensorBlob& b : blobs)
    if (b.name != "model.layers.1.mlp.up_proj.weight") missing.push_back(b);
  test::write_safetensors(dir.path() / "model.safetensors", missing);
  expect_error([&] { load_weights(dir.path(), config); },
               {"model.safetensors", "missing tensor model.layers.1.mlp.up_proj.weight"});

  // Wrong shape: q_proj transposed-ish, as the task's example message.
  std::vector<TensorBlob> wrong = blobs;
  for (TensorBlob& b : wrong)
    if (b.name == "model.layers.0.self_attn.q_proj.weight") b.shape = {64, 16};
  test::write_safetensors(dir.path() / "model.safetensors", wrong);
  expect_error(
      [&] { load_weights(dir.path(), config); },
      {"model.safetensors: tensor model.layers.0.self_attn.q_proj.weight has shape [64, 16], "
       "expected [32, 32]"});

  // Non-float dtype on a needed tensor.
  std::vector<TensorBlob> ints = blobs;
  for (TensorBlob& b : ints)
    if (b.name == "model.norm.weight") b.dtype = "I32";
  test::write_safetensors(dir.path() / "model.safetensors", ints);
  expect_error([&] { load_weights(dir.path(), config); },
               {"model.safetensors", "model.norm.weight", "I32"});

  // A truncated file is caught when the checkpoint is opened.
  test::write_safetensors(dir.path() / "model.safetensors", blobs);
  fs::resize_file(dir.path() / "model.safetensors",
                  fs::file_size(dir.path() / "model.safetensors") - 4);
  expect_error([&] { load_weights(dir.path(), config); },
               {"model.safetensors", "lm_head.weight", "truncated"});
}

TEST(ModelWeights, ShardErrorsNameTheShard) {
  TempDir dir;
  json j = test::tiny_config_json();
  ModelConfig config = config_from(j);
  std::vector<TensorBlob> blobs = test::weight_blobs(make_dummy_weights(config, 1), config);
  std::vector<TensorBlob> first(blobs.begin(), blobs.begin() + 5),
      second(blobs.begin() + 5, blobs.end());
  for (TensorBlob& b : second)
    if (b.name == "model.layers.1.self_attn.k_proj.weight") b.shape = {16, 16, 2};
  test::write_sharded(dir.path(), {first, second});
  expect_error(
      [&] { load_weights(dir.path(), config); },
      {"model-00002-of-00002.safetensors: tensor model.layers.1.self_attn.k_proj.weight has shape "
       "[16, 16, 2], expected [16, 32]"});

  fs::remove(dir.path() / "model-00001-of-00002.safetensors");
  expect_error(
      [&] { load_weights(dir.path(), config); },
      {"model.safetensors.index.json", "model-00001-of-00002.safetensors", "does not exist"});

  // The index lists a tensor its shard lacks.
  test::write_sharded(dir.path(), {first, second});
  json index = json::parse(std::ifstream(dir.path() / "model.safetensors.index.json"));
  index["weight_map"]["model.extra.weight"] = "model-00001-of-00002.safetensors";
  test::write_json(dir.path() / "model.safetensors.index.json", index);
  expect_error([&] { SafetensorsCheckpoint c(dir.path()); },
               {"model-00001-of-00002.safetensors", "model.extra.weight", "missing"});
}

TEST(ModelWeights, DummyWeightsDeterministic) {
  json j = test::tiny_config_json("Qwen3ForCausalLM");
  j["head_dim"] = 16;
  ModelConfig config = config_from(j);
  ModelWeights a = make_dummy_weights(config, 42);
  ModelWeights b = make_dummy_weights(config, 42);
  ThreadPool pool(2);
  ModelWeights threaded = make_dummy_weights(config, 42, &pool);
  expect_same(a, b);
  expect_same(a, threaded);
  ModelWeights other = make_dummy_weights(config, 43);
  EXPECT_NE(a.layers[0].q_proj.data, other.layers[0].q_proj.data);

  EXPECT_EQ(a.layers[0].q_proj.shape, (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(a.layers[0].q_norm.shape, (std::vector<int64_t>{16}));
  // Linear weights within +-sqrt(3 / in_features), norms near 1.
  const double bound = std::sqrt(3.0 / 32);
  double sum_sq = 0;
  for (float v : a.layers[1].gate_proj.data) {
    ASSERT_LE(std::fabs(v), bound);
    sum_sq += double(v) * v;
  }
  EXPECT_NEAR(sum_sq / double(a.layers[1].gate_proj.data.size()), 1.0 / 32, 0.2 / 32);
  for (float v : a.final_norm.data) EXPECT_NEAR(v, 1.0, 0.1);

  // Tensors spanning several generator chunks come out the same on any thread count.
  j["vocab_size"] = 40000;  // embed_tokens: 1.28M elements
  ModelConfig wide = config_from(j);
  ThreadPool one(1);
  EXPECT_EQ(make_dummy_weights(wide, 5, &one).embed_tokens.data,
            make_dummy_weights(wide, 5, &pool).embed_tokens.data);
}

// ---------------------------------------------------------------- HF fixtures

// Every fixture folder written by tools/make_hf_fixtures.py (transformers 5) must load.
TEST(HfFixtures, ConfigsAndWeightsLoad) {
  const fs::path root = fs::path(RELAYLLM_SOURCE_DIR) / "tests" / "data" / "hf_fixtures";
  ASSERT_TRUE(fs::is_directory(root)) << root;
  int count = 0;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (!entry.is_directory()) continue;
    SCOPED_TRACE(entry.path().filename().string());
    ++count;
    ModelConfig config = parse_model_config(entry.path() / "config.json");
    ModelWeights weights = load_weights(entry.path(), config);
    EXPECT_EQ(config.vocab_size, 320);
    EXPECT_EQ(config.hidden_size, 64);
    EXPECT_EQ(config.num_layers, 2);
    EXPECT_EQ(config.num_kv_heads, 2);
    EXPECT_EQ(config.torch_dtype, "float32");
    EXPECT_EQ(weights.layers.size(), 2u);
    EXPECT_EQ(weights.lm_head.empty(), config.tie_word_embeddings);
    EXPECT_EQ(rope_inverse_frequencies(config).size(), size_t(config.head_dim / 2));
    ASSERT_TRUE(load_generation_config(entry.path()).has_value());

    json expected = json::parse(std::ifstream(entry.path() / "expected.json"));
    EXPECT_EQ(expected["architecture"], config.architecture);
    for (const json& seq : expected["sequences"]) {
      EXPECT_EQ(seq["logits"].size(), seq["input_ids"].size());
      EXPECT_EQ(seq["logits"][0].size(), 320u);
    }

    const std::string name = entry.path().filename().string();
    if (name == "llama3") {
      EXPECT_EQ(config.rope.type, RopeType::kLlama3);
      EXPECT_EQ(config.rope.original_max_position_embeddings, 64);
      EXPECT_TRUE(config.tie_word_embeddings);
      EXPECT_EQ(config.eos_token_ids, (std::vector<int32_t>{318, 319}));
    } else if (name == "qwen2") {
      EXPECT_TRUE(config.qkv_bias);
      EXPECT_FALSE(weights.layers[0].q_bias.empty());
    } else if (name == "qwen3") {
      EXPECT_TRUE(config.qk_norm);
      EXPECT_EQ(config.head_dim, 32);
      EXPECT_EQ(weights.layers[0].q_proj.shape, (std::vector<int64_t>{128, 64}));
      EXPECT_EQ(weights.layers[0].k_norm.shape, (std::vector<int64_t>{32}));
    } else if (name == "mistral") {
      EXPECT_FALSE(config.sliding_window.has_value());
    }
  }
  EXPECT_EQ(count, 5);
}

}  // namespace
}  // namespace relayllm
