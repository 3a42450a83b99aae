// The CPU backend's forward against Hugging Face transformers: tiny random-weight
// models of each architecture, saved by transformers with the logits it computed
// (tests/data/hf_fixtures, made by tools/make_hf_fixtures.py). Checked through the
// paged path in several ways — whole prompt, chunks, token by token, and with a
// relay prefix — all of which must match the same reference rows.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/model/llama_model.h"
#include "relayllm/model/model_config.h"
#include "relayllm/model/model_weights.h"

namespace relayllm {
namespace {

// fp32 on both sides, different summation orders: errors sit near 1e-6 relative
// to the largest logit; the bound leaves room for that and nothing more.
constexpr double kRelativeBound = 2e-5;
constexpr int32_t kBlockSize = 4;

std::filesystem::path fixture_dir(const std::string& name) {
  return std::filesystem::path(RELAYLLM_SOURCE_DIR) / "tests/data/hf_fixtures" / name;
}

struct Fixture {
  ModelConfig config;
  ModelWeights weights;
  std::vector<std::vector<int32_t>> inputs;
  std::vector<std::vector<std::vector<float>>> logits;  // [sequence][position][vocab]
};

Fixture load_fixture(const std::string& name) {
  Fixture f;
  f.config = parse_model_config(fixture_dir(name) / "config.json");
  f.weights = load_weights(fixture_dir(name), f.config);
  std::ifstream in(fixture_dir(name) / "expected.json");
  nlohmann::json expected = nlohmann::json::parse(in);
  for (const auto& seq : expected["sequences"]) {
    f.inputs.push_back(seq["input_ids"].get<std::vector<int32_t>>());
    f.logits.push_back(seq["logits"].get<std::vector<std::vector<float>>>());
  }
  return f;
}

// Runs `tokens` through the paged forward: the first prefix_len tokens as a relay
// prefix (their own blocks, computed once), the rest as the sequence's own tokens
// in chunks of `chunk`. Returns the logits of every own position.
std::vector<std::vector<float>> run_paged(LlamaModel& model, const std::vector<int32_t>& tokens,
                                          int32_t prefix_len, int32_t chunk) {
  const int32_t n = int32_t(tokens.size());
  const int32_t prefix_blocks = (prefix_len + kBlockSize - 1) / kBlockSize;
  const int32_t own_blocks = (n - prefix_len + kBlockSize - 1) / kBlockSize;
  auto kv = model.allocate_kv_cache(prefix_blocks + own_blocks + 1, kBlockSize);
  // Own blocks are numbered after the prefix's, in reverse, so a table mix-up cannot pass.
  std::vector<int32_t> prefix_table, own_table;
  for (int32_t b = 0; b < prefix_blocks; ++b) prefix_table.push_back(b);
  for (int32_t b = 0; b < own_blocks; ++b) own_table.push_back(prefix_blocks + own_blocks - b);

  auto plan_for = [&](const std::vector<int32_t>& table, int32_t first, int32_t count,
                      int32_t offset, bool with_prefix, bool logits) {
    BatchPlan plan;
    plan.block_size = kBlockSize;
    plan.block_tables = table;
    PlannedSequence seq;
    seq.query_len = count;
    seq.context_len = first + count;
    seq.position_offset = offset;
    seq.num_blocks = (first + count + kBlockSize - 1) / kBlockSize;
    for (int32_t j = first; j < first + count; ++j) {
      plan.token_ids.push_back(tokens[offset + j]);
      plan.positions.push_back(offset + j);
      plan.slot_mapping.push_back(int64_t(table[j / kBlockSize]) * kBlockSize + j % kBlockSize);
      if (logits) plan.logit_rows.push_back(j - first);
    }
    if (with_prefix) {
      PlannedPrefixGroup group;
      group.prefix_len = prefix_len;
      group.block_table_start = int32_t(plan.block_tables.size());
      group.num_blocks = prefix_blocks;
      plan.block_tables.insert(plan.block_tables.end(), prefix_table.begin(), prefix_table.end());
      for (int32_t r = 0; r < count; ++r) group.query_rows.push_back(r);
      plan.prefix_groups.push_back(group);
      seq.prefix_group = 0;
    }
    plan.sequences.push_back(seq);
    return plan;
  };

  std::vector<float> logits;
  if (prefix_len > 0) model.forward(plan_for(prefix_table, 0, prefix_len, 0, false, false), kv, logits);
  std::vector<std::vector<float>> rows;
  const int64_t vocab = model.config().vocab_size;
  for (int32_t first = 0; first < n - prefix_len; first += chunk) {
    int32_t count = std::min(chunk, n - prefix_len - first);
    model.forward(plan_for(own_table, first, count, prefix_len, prefix_len > 0, true), kv, logits);
    for (int32_t r = 0; r < count; ++r)
      rows.emplace_back(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
  }
  return rows;
}

double relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    norm += double(want[i]) * want[i];
  }
  return std::sqrt(diff / norm);
}

class HfLogits : public ::testing::TestWithParam<std::string> {};

TEST_P(HfLogits, PagedForwardMatchesTransformers) {
  Fixture f = load_fixture(GetParam());
  CpuBackend backend(2);
  LlamaModel model(f.config, f.weights, backend, f.config.max_position_embeddings);
  double worst = 0;
  for (size_t s = 0; s < f.inputs.size(); ++s) {
    const auto& tokens = f.inputs[s];
    const int32_t n = int32_t(tokens.size());
    struct Variant { const char* name; int32_t prefix_len; int32_t chunk; };
    const Variant variants[] = {
        {"whole prompt", 0, n},       {"chunks of 5", 0, 5},
        {"token by token", 0, 1},     {"relay prefix 7, whole rest", 7, n},
        {"relay prefix 9, decode", 9, 1}, {"relay prefix n-1", n - 1, 1},
    };
    for (const Variant& v : variants) {
      auto rows = run_paged(model, tokens, v.prefix_len, v.chunk);
      ASSERT_EQ(int32_t(rows.size()), n - v.prefix_len);
      for (int32_t r = 0; r < int32_t(rows.size()); ++r) {
        const auto& want = f.logits[s][v.prefix_len + r];
        double error = relative_error(rows[r], want);
        worst = std::max(worst, error);
        EXPECT_LT(error, kRelativeBound)
            << GetParam() << " sequence " << s << " (" << v.name << ") position "
            << v.prefix_len + r;
      }
    }
  }
  std::printf("%s: worst relative error %.2e over all positions and variants\n", GetParam().c_str(),
              worst);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfLogits,
                         ::testing::Values("llama2", "llama3", "mistral", "qwen2", "qwen3"));

}  // namespace
}  // namespace relayllm
