// Grammar masks in the engine: the sampler applies a packed mask exactly as a bit-by-bit
// reference does (whole words of ones or zeros, mixed words, a vocabulary that ends mid-word,
// logit_bias after the mask); the mask worker fills the same masks as the calling thread and
// keeps errors with their sequence; the engine's statistics count every mask it filled.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "relayllm/engine/grammar_mask_worker.h"
#include "relayllm/engine/sampler.h"
#include "relayllm/structured/grammar_compiler.h"
#include "relayllm/structured/grammar_matcher.h"
#include "tiny_models.h"

namespace relayllm {
namespace {

// Sampling at temperature 1 with a seed, held to a compiled constraint.
SamplingParams seeded_constrained(
    uint64_t seed, int32_t max_tokens,
    std::shared_ptr<const structured::CompiledConstraint> constraint) {
  SamplingParams p;
  p.max_tokens = max_tokens;
  p.temperature = 1.0f;
  p.seed = seed;
  p.constraint = std::move(constraint);
  return p;
}

using structured::ConstraintKind;
using structured::ConstraintSpec;

// The masks grammars produce: runs of whole-one and whole-zero words and a few mixed ones.
std::vector<int32_t> random_mask(std::mt19937& rng, size_t words) {
  std::vector<int32_t> mask(words);
  for (auto& w : mask) {
    const int kind = int(rng() % 4);
    w = kind == 0 ? 0 : kind == 1 ? -1 : int32_t(rng());
  }
  return mask;
}

TEST(GrammarMaskSampler, PackedMaskMatchesABitByBitReference) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (size_t vocab : {1ul, 31ul, 32ul, 33ul, 100ul, 1000ul, 49152ul}) {
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<float> logits(vocab);
      for (float& x : logits) x = normal(rng);
      std::vector<int32_t> mask = random_mask(rng, (vocab + 31) / 32);
      // At least one allowed token, so the sampler has something to pick.
      const size_t keep = rng() % vocab;
      mask[keep / 32] |= int32_t(1u << (keep % 32));
      SamplingParams p;
      p.temperature = 0;
      const int32_t biased = int32_t(rng() % vocab);
      p.logit_bias = {{biased, 3.0f}};
      // Reference: masked ids at -inf, then the bias; greedy picks the largest (lowest id on ties).
      std::vector<float> ref(logits);
      for (size_t id = 0; id < vocab; ++id)
        if (!((uint32_t(mask[id / 32]) >> (id % 32)) & 1u))
          ref[id] = -std::numeric_limits<float>::infinity();
      ref[size_t(biased)] += 3.0f;
      const int32_t want = int32_t(std::max_element(ref.begin(), ref.end()) - ref.begin());
      SampleInput in;
      in.logits = logits;
      in.params = &p;
      in.token_bitmask = mask;
      std::vector<float> scratch;
      RequestRng r(1);
      EXPECT_EQ(sample_token(in, r, scratch).token, want) << vocab << " " << trial;
      // Sampling at a temperature never draws a masked token.
      p.temperature = 1.0f;
      for (int draw = 0; draw < 20; ++draw) {
        const int32_t t = sample_token(in, r, scratch).token;
        EXPECT_TRUE((uint32_t(mask[size_t(t) / 32]) >> (t % 32)) & 1u) << vocab << " " << t;
      }
    }
  }
}

// With one thread and with a pool (the masks of a step spread over threads): the same masks.
class GrammarMaskWorkerThreads : public ::testing::TestWithParam<int> {};

TEST_P(GrammarMaskWorkerThreads, FillsWhatTheCallingThreadFillsAndKeepsErrorsPerSequence) {
  EngineConfig config;
  config.num_kv_blocks = 16;
  auto engine = testing::make_tiny_engine("llama3", config);
  const int32_t vocab = int32_t(engine->model_config().vocab_size);
  structured::GrammarCompiler c(engine->tokenizer(), vocab, engine->eos_token_ids());
  ConstraintSpec spec;
  spec.kind = ConstraintKind::kJsonSchema;
  spec.text = R"({"type": "object", "properties": {"n": {"enum": [1, 2]}}, "required": ["n"]})";
  auto grammar = c.compile(spec);
  std::vector<std::unique_ptr<Sequence>> seqs;
  std::vector<Sequence*> raw;
  const std::string answer = R"({"n": 1})";
  for (int i = 0; i < 13; ++i) {
    SamplingParams p;
    auto s = std::make_unique<Sequence>(i, std::vector<int32_t>{1, 2}, p, RequestRng(1));
    s->grammar = std::make_unique<structured::GrammarMatcher>(grammar);
    // Different states: sequence i has accepted the first i % 8 bytes of the one valid answer.
    s->grammar->accept_string(answer.substr(0, size_t(i % 8)));
    s->token_bitmask.assign(structured::bitmask_words(vocab), 0x5a5a5a5a);  // poison
    raw.push_back(s.get());
    seqs.push_back(std::move(s));
  }
  // A wrong size: an error for these sequences only.
  raw[4]->token_bitmask.resize(1);
  raw[11]->token_bitmask.resize(1);
  GrammarMaskWorker worker(GetParam());
  for (int round = 0; round < 3; ++round) {  // the thread serves batch after batch
    worker.start(raw);
    worker.wait();
  }
  worker.wait();  // nothing pending: returns
  EXPECT_EQ(worker.stats().masks, 39);
  EXPECT_GE(worker.stats().fill_seconds, 0.0);
  for (int i = 0; i < 13; ++i) {
    if (i == 4 || i == 11) {
      EXPECT_NE(seqs[size_t(i)]->grammar_error.find("structured output: token bitmask"),
                std::string::npos)
          << seqs[size_t(i)]->grammar_error;
      continue;
    }
    std::vector<int32_t> expected(structured::bitmask_words(vocab));
    structured::GrammarMatcher m(grammar);
    m.accept_string(answer.substr(0, size_t(i % 8)));
    m.fill_next_token_bitmask(expected);
    EXPECT_EQ(seqs[size_t(i)]->token_bitmask, expected) << i;
    EXPECT_TRUE(seqs[size_t(i)]->grammar_error.empty()) << seqs[size_t(i)]->grammar_error;
  }
  // A worker destroyed with a batch in flight finishes it first.
  {
    GrammarMaskWorker w(GetParam());
    w.start({raw[0], raw[1], raw[2]});
  }
}

INSTANTIATE_TEST_SUITE_P(OneAndThree, GrammarMaskWorkerThreads, ::testing::Values(1, 3));

TEST(GrammarMaskWorker, EngineCountsEveryMaskItFilled) {
  EngineConfig config;
  config.num_kv_blocks = 32;
  auto engine = testing::make_tiny_engine("llama3", config);
  structured::GrammarCompiler c(engine->tokenizer(), int32_t(engine->model_config().vocab_size),
                                engine->eos_token_ids());
  ConstraintSpec spec;
  spec.kind = ConstraintKind::kChoice;
  spec.choices = {"yes", "no", "maybe not"};
  std::vector<int64_t> ids;
  for (uint64_t seed = 0; seed < 3; ++seed) {
    ids.push_back(engine->add_request({1, 2, 3}, seeded_constrained(seed, 32, c.compile(spec))));
  }
  SamplingParams free;
  free.max_tokens = 5;
  free.ignore_eos = true;
  engine->add_request({4, 5}, free);  // unconstrained: no mask
  while (engine->has_unfinished()) engine->step();
  int64_t constrained_tokens = 0;
  for (int64_t id : ids) {
    EXPECT_EQ(engine->find(id)->finish_reason, "stop");
    constrained_tokens += int64_t(engine->find(id)->output_ids.size());
  }
  EXPECT_EQ(engine->stats().grammar_masks, constrained_tokens);
  EXPECT_GT(engine->stats().grammar_mask_fill_seconds, 0.0);
  EXPECT_GE(engine->stats().grammar_mask_wait_seconds, 0.0);
}

// The engine with its masks filled by a pool gives the tokens it gives with one mask thread:
// sampled constrained requests of several grammars, seeded, in one batch.
TEST(GrammarMaskWorker, MaskThreadsDoNotChangeTheTokens) {
  auto run = [](int32_t threads) {
    EngineConfig config;
    config.num_kv_blocks = 64;
    config.grammar_mask_threads = threads;
    auto engine = testing::make_tiny_engine("llama3", config);
    structured::GrammarCompiler c(engine->tokenizer(), int32_t(engine->model_config().vocab_size),
                                  engine->eos_token_ids());
    ConstraintSpec choice;
    choice.kind = ConstraintKind::kChoice;
    choice.choices = {"yes", "no", "maybe not", "n/a"};
    ConstraintSpec schema;
    schema.kind = ConstraintKind::kJsonSchema;
    schema.text = R"({"type": "object", "properties": {"a": {"type": "integer"},
                      "b": {"type": "array", "items": {"enum": ["x", "y"]}, "maxItems": 3}},
                      "required": ["a", "b"]})";
    std::vector<int64_t> ids;
    for (uint64_t seed = 0; seed < 10; ++seed) {
      ids.push_back(
          engine->add_request({1, 2, int32_t(3 + seed)},
                              seeded_constrained(seed, 24, c.compile(seed % 2 ? schema : choice))));
    }
    while (engine->has_unfinished()) engine->step();
    std::vector<std::vector<int32_t>> out;
    for (int64_t id : ids) out.push_back(engine->find(id)->output_ids);
    return out;
  };
  const auto one = run(1);
  EXPECT_EQ(run(4), one);
  size_t tokens = 0;
  for (const auto& o : one) tokens += o.size();
  EXPECT_GT(tokens, 20u);  // the requests did generate
}

}  // namespace
}  // namespace relayllm
