// Weights kept or converted at load for the CPU backend's block kernels:
// - a BF16/F16 safetensors checkpoint keeps its linear and embedding tensors 16-bit when the
//   backend takes the format (bytes as in the file), and runs to the fp32 path's logits within
//   fp32 rounding (the half kernels decode exactly; only summation order differs): 1e-5;
// - `--quantization q8_0` (quantize_weights): per value |w - d~ q| <= d/2 + 127 |d~ - d|
//   (d = max|w|/127 of the block, d~ its fp16 rounding: round-to-int error plus the scale's
//   rounding on the largest code), the blocks decode by formats/gguf_dequant to the same
//   values; end to end on the HF fixtures against the fp32 path on the original weights,
//   bound 1e-1 relative L2 (the bound hf_logits_blocks_test justifies for Q8_0 weights with
//   8-bit activations on these tiny random models);
// - the default host KV pool size (host_kv_budget_bytes).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "../common/paged_forward.h"
#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/common/error.h"
#include "relayllm/common/half.h"
#include "relayllm/formats/gguf_dequant.h"
#include "relayllm/model/llama_model.h"
#include "relayllm/model/model_config.h"
#include "relayllm/model/model_weights.h"
#include "relayllm/model/weight_quantization.h"
#include "relayllm/serving/host_kv_budget.h"
#include "safetensors_writer.h"

namespace relayllm {
namespace {

using testing::fixture_dir;
using testing::relative_error;
using testing::run_paged;

bool is_matrix(WeightKind k) { return k == WeightKind::kLinear || k == WeightKind::kEmbedding; }

std::filesystem::path write_tiny_checkpoint(const std::string& dtype, ModelConfig& config,
                                            ModelWeights& fp32) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("relayllm_formats_" + dtype + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  nlohmann::json cfg = test::tiny_config_json();
  cfg["hidden_size"] = 64;  // rows of whole 32-value blocks (intermediate 48 is not)
  test::write_json(dir / "config.json", cfg);
  config = parse_model_config(dir / "config.json");
  fp32 = make_dummy_weights(config, 3);
  test::write_safetensors(dir / "model.safetensors", test::weight_blobs(fp32, config, dtype));
  return dir;
}

TEST(WeightFormatsAtLoad, HalfCheckpointsStayHalfWhenTheBackendTakesThem) {
  for (const std::string dtype : {"BF16", "F16"}) {
    ModelConfig config;
    ModelWeights original;
    const auto dir = write_tiny_checkpoint(dtype, config, original);
    const WeightFormat want = dtype == "BF16" ? WeightFormat::kBF16 : WeightFormat::kF16;
    ModelWeights kept = load_weights(dir, config, nullptr, [](WeightFormat) { return true; });
    ModelWeights plain = load_weights(dir, config);
    std::vector<WeightSlot> ks = weight_slots(kept, config), ps = weight_slots(plain, config);
    for (size_t i = 0; i < ks.size(); ++i) {
      const HostTensor& k = *ks[i].tensor;
      const HostTensor& p = *ps[i].tensor;
      ASSERT_EQ(p.format, WeightFormat::kNone) << ks[i].name;
      if (!is_matrix(ks[i].kind)) {
        EXPECT_EQ(k.format, WeightFormat::kNone) << ks[i].name;
        continue;
      }
      ASSERT_EQ(k.format, want) << ks[i].name;
      ASSERT_TRUE(k.data.empty());
      ASSERT_EQ(k.blocks.size(), p.data.size() * 2) << ks[i].name;
      for (size_t j = 0; j < p.data.size(); ++j) {
        uint16_t h;
        std::memcpy(&h, k.blocks.data() + 2 * j, 2);
        ASSERT_EQ(want == WeightFormat::kBF16 ? bf16_to_float(h) : fp16_to_float(h), p.data[j])
            << ks[i].name << " value " << j;
      }
    }
    // The half kernels against the fp32 path on the same (decoded) values.
    CpuBackend blocks(CpuBackendOptions{.num_threads = 2});
    CpuBackend reference(CpuBackendOptions{.num_threads = 1, .block_weights = false});
    LlamaModel half_model(config, kept, blocks, config.max_position_embeddings);
    LlamaModel ref_model(config, plain, reference, config.max_position_embeddings);
    const std::vector<int32_t> tokens = {1, 5, 9, 3, 17, 22, 8, 30, 4, 11, 2, 39};
    for (auto [prefix, chunk] : {std::pair{0, 12}, {5, 1}}) {
      const auto got = run_paged(half_model, tokens, prefix, chunk);
      const auto want_rows = run_paged(ref_model, tokens, prefix, chunk);
      for (size_t r = 0; r < got.size(); ++r)
        EXPECT_LT(relative_error(got[r], want_rows[r]), 1e-5) << dtype << " row " << r;
    }
    std::filesystem::remove_all(dir);
  }
}

TEST(WeightFormatsAtLoad, Q8_0BlocksAreWithinTheirBoundAndDecodeByTheGgufDecoder) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  std::vector<float> w(32 * 200);
  for (size_t i = 0; i < w.size(); ++i) w[i] = normal(rng) * (i % 97 == 0 ? 30.0f : 1.0f);
  std::fill(w.begin() + 64, w.begin() + 96, 0.0f);  // an all-zero block
  const std::vector<std::byte> blocks = quantize_q8_0(w);
  ASSERT_EQ(blocks.size(), w.size() / 32 * 34);
  std::vector<float> decoded(w.size());
  dequantize_blocks(GgmlType::kQ8_0, blocks, 0, w.size() / 32, decoded.data());
  for (size_t b = 0; b < w.size() / 32; ++b) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(w[32 * b + i]));
    const double d = amax / 127.0;
    uint16_t dh;
    std::memcpy(&dh, blocks.data() + 34 * b, 2);
    const double bound = d / 2 + 127 * std::fabs(double(fp16_to_float(dh)) - d) + 1e-12;
    for (int i = 0; i < 32; ++i) {
      const size_t j = 32 * b + i;
      const int8_t q = int8_t(blocks[34 * b + 2 + size_t(i)]);
      ASSERT_EQ(decoded[j], fp16_to_float(dh) * float(q)) << "block " << b;
      ASSERT_LE(std::fabs(double(decoded[j]) - w[j]), bound) << "block " << b << " value " << i;
    }
  }
  EXPECT_THROW(quantize_q8_0(std::vector<float>(33)), Error);
}

TEST(WeightFormatsAtLoad, QuantizeWeightsTakesMatricesOfWholeBlocksOnly) {
  ModelConfig config;
  ModelWeights original;
  const auto dir = write_tiny_checkpoint("BF16", config, original);
  ModelWeights w = load_weights(dir, config, nullptr, [](WeightFormat) { return true; });
  std::filesystem::remove_all(dir);
  const size_t n = quantize_weights(w, config, LoadQuantization::kQ8_0);
  size_t want = 0;
  for (const WeightSlot& s : weight_slots(w, config)) {
    const HostTensor& t = *s.tensor;
    if (is_matrix(s.kind) && s.shape[1] % 32 == 0) {
      ++want;
      EXPECT_EQ(t.format, WeightFormat::kQ8_0) << s.name;
      EXPECT_EQ(t.blocks.size(), size_t(t.numel() / 32 * 34)) << s.name;
    } else if (is_matrix(s.kind)) {
      EXPECT_EQ(t.format, WeightFormat::kBF16) << s.name << " (48 columns: not whole blocks)";
    } else {
      EXPECT_EQ(t.format, WeightFormat::kNone) << s.name;
    }
  }
  EXPECT_EQ(n, want);
  EXPECT_GT(n, 0u);
  EXPECT_EQ(quantize_weights(w, config, LoadQuantization::kNone), 0u);
}

TEST(WeightFormatsAtLoad, QuantizationFlagValues) {
  for (const char* none : {"", "none", "None", "gguf"})
    EXPECT_EQ(parse_load_quantization(none), LoadQuantization::kNone) << none;
  EXPECT_EQ(parse_load_quantization("q8_0"), LoadQuantization::kQ8_0);
  for (const char* bad : {"awq", "Q8_0", "q4_0", "FP8", "fp4"}) {
    try {
      parse_load_quantization(bad);
      ADD_FAILURE() << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("--quantization ") + bad), std::string::npos)
          << e.what();
    }
  }
}

TEST(WeightFormatsAtLoad, Q8_0AtLoadMatchesTheFp32PathOnTheHfFixtures) {
  for (const std::string name : {"llama2", "llama3", "mistral", "qwen2", "qwen3"}) {
    const ModelConfig config = parse_model_config(fixture_dir(name) / "config.json");
    const ModelWeights fp32 = load_weights(fixture_dir(name), config);
    ModelWeights q8 = fp32;
    ASSERT_GT(quantize_weights(q8, config, LoadQuantization::kQ8_0), 0u) << name;
    CpuBackend blocks(CpuBackendOptions{.num_threads = 2});
    CpuBackend reference(CpuBackendOptions{.num_threads = 1, .block_weights = false});
    LlamaModel model(config, q8, blocks, config.max_position_embeddings);
    LlamaModel ref_model(config, fp32, reference, config.max_position_embeddings);
    std::ifstream in(fixture_dir(name) / "expected.json");
    const nlohmann::json expected = nlohmann::json::parse(in);
    double worst = 0;
    for (const auto& seq : expected["sequences"]) {
      const auto tokens = seq["input_ids"].get<std::vector<int32_t>>();
      const auto got = run_paged(model, tokens, 0, int32_t(tokens.size()));
      const auto want = run_paged(ref_model, tokens, 0, int32_t(tokens.size()));
      for (size_t r = 0; r < got.size(); ++r) {
        const double e = relative_error(got[r], want[r]);
        worst = std::max(worst, e);
        EXPECT_LT(e, 1e-1) << name << " row " << r;
      }
    }
    std::printf("%s: --quantization q8_0 vs the fp32 path, worst relative error %.2e\n",
                name.c_str(), worst);
  }
}

TEST(WeightFormatsAtLoad, HostKvPoolIsTheWorkloadWithinTheMemoryShare) {
  ModelConfig config = parse_model_config_json(test::tiny_config_json(), "tiny");
  const ModelWeights w = make_dummy_weights(config, 1);
  CpuBackend backend(CpuBackendOptions{.num_threads = 1, .kv_dtype = DType::kF16});
  LlamaModel model(config, w, backend, config.max_position_embeddings);
  // 2 layers x 2 KV heads x head dim 8 x (K, V) x 2 bytes = 128 bytes per token.
  const size_t per_token =
      size_t(config.num_layers * config.num_kv_heads * config.head_dim * 2 * 2);
  ASSERT_EQ(model.kv_bytes_per_block(1), per_token);
  const size_t huge = size_t(1) << 40;
  // 3 sequences of 40 tokens = 3 x 3 blocks of 16.
  EXPECT_EQ(host_kv_budget_bytes(model, 3, 40, 16, huge), 3 * 3 * 16 * per_token);
  // max_model_len 0: the model's 128 positions.
  EXPECT_EQ(host_kv_budget_bytes(model, 2, 0, 16, huge), 2 * 8 * 16 * per_token);
  // Capped at the share of memory, never below one block.
  EXPECT_EQ(host_kv_budget_bytes(model, 256, 128, 16, 100000), size_t(kHostKvMemoryShare * 100000));
  EXPECT_EQ(host_kv_budget_bytes(model, 256, 128, 16, 10), 16 * per_token);
}

}  // namespace
}  // namespace relayllm
