// A step's rows sampled over threads give what one thread gives: the row sampler visits every
// row once with a buffer no other thread uses, and the engine's results (tokens, logprobs,
// prompt logprobs, constrained outputs, errors) do not depend on the thread count.
#include "relayllm/engine/row_sampler.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "relayllm/structured/grammar_compiler.h"
#include "tiny_models.h"

namespace relayllm {
namespace {

using structured::ConstraintKind;
using structured::ConstraintSpec;

TEST(RowSampler, VisitsEveryRowOnceWithAScratchOfItsOwn) {
  for (int threads : {1, 2, 3, 8}) {
    RowSampler sampler(threads);
    for (size_t n : {size_t(0), size_t(1), size_t(3), size_t(7), size_t(64), size_t(257)}) {
      std::vector<std::atomic<int>> visits(n);
      std::atomic<int> shared_scratch{0};
      sampler.run(n, [&](size_t i, std::vector<float>& scratch) {
        visits[i].fetch_add(1);
        // A buffer in use by two threads at once would see the other's marker.
        scratch.assign(64, float(i));
        std::this_thread::yield();
        for (float v : scratch)
          if (v != float(i)) shared_scratch.fetch_add(1);
      });
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(visits[i].load(), 1) << threads << " " << n;
      EXPECT_EQ(shared_scratch.load(), 0) << threads << " threads, " << n << " rows";
    }
  }
}

struct Result {
  std::vector<int32_t> tokens;
  std::string finish_reason, error;
  std::vector<TokenLogprobs> logprobs;
  std::vector<PromptLogprob> prompt_logprobs;
};

bool same(const TokenLogprobs& a, const TokenLogprobs& b) {
  return a.token == b.token && a.logprob == b.logprob && a.top == b.top;
}

std::vector<Result> run_mixed_batch(int32_t sampling_threads) {
  EngineConfig config;
  config.num_kv_blocks = 128;
  config.block_size = 4;
  config.sampling_threads = sampling_threads;
  auto engine = testing::make_tiny_engine("llama3", config);
  const int32_t vocab = int32_t(engine->model_config().vocab_size);
  structured::GrammarCompiler compiler(engine->tokenizer(), vocab, engine->eos_token_ids());
  ConstraintSpec schema;
  schema.kind = ConstraintKind::kJsonSchema;
  schema.text =
      R"({"type": "object", "properties": {"k": {"enum": ["a", "bb"]}}, "required": ["k"]})";
  std::vector<int64_t> ids;
  for (int i = 0; i < 24; ++i) {
    SamplingParams p;
    p.max_tokens = 12;
    p.ignore_eos = i % 3 == 0;
    p.seed = uint64_t(100 + i);
    switch (i % 8) {
      case 0:
        p.temperature = 0.0f;
        break;  // greedy, in place
      case 1:
        p.temperature = 0.8f;
        p.top_p = 0.9f;
        break;  // nucleus
      case 2:
        p.temperature = 0.0f;
        p.logprobs = 3;
        break;  // greedy with logprobs
      case 3:
        p.temperature = 1.0f;
        p.top_k = 5;
        p.prompt_logprobs = 2;
        break;
      case 4:
        p.temperature = 0.7f;
        p.repetition_penalty = 1.3f;
        p.presence_penalty = 0.5f;
        break;
      case 5:
        p.temperature = 1.0f;
        p.constraint = compiler.compile(schema);
        break;
      case 6:
        p.temperature = 0.0f;
        p.bad_words_ids = {{7}, {3, 9}};
        p.min_tokens = 4;
        break;
      case 7:
        p.temperature = 1.0f;
        p.allowed_token_ids = std::vector<int32_t>{5, 6, 7, 8};
        break;
    }
    std::vector<int32_t> prompt;
    for (int t = 0; t < 3 + i % 7; ++t) prompt.push_back(3 + (i * 7 + t * 5) % 200);
    ids.push_back(engine->add_request(prompt, p));
  }
  while (engine->has_unfinished()) engine->step();
  std::vector<Result> out;
  for (int64_t id : ids) {
    const Sequence* s = engine->find(id);
    out.push_back(
        {s->output_ids, s->finish_reason, s->error_message, s->logprobs, s->prompt_logprobs});
  }
  return out;
}

TEST(RowSampler, EngineResultsDoNotDependOnTheSamplingThreads) {
  const std::vector<Result> one = run_mixed_batch(1);
  for (int32_t threads : {2, 4}) {
    const std::vector<Result> many = run_mixed_batch(threads);
    ASSERT_EQ(many.size(), one.size());
    for (size_t i = 0; i < one.size(); ++i) {
      EXPECT_EQ(many[i].tokens, one[i].tokens) << "request " << i << ", " << threads << " threads";
      EXPECT_EQ(many[i].finish_reason, one[i].finish_reason) << i;
      EXPECT_EQ(many[i].error, one[i].error) << i;
      ASSERT_EQ(many[i].logprobs.size(), one[i].logprobs.size()) << i;
      for (size_t k = 0; k < one[i].logprobs.size(); ++k)
        EXPECT_TRUE(same(many[i].logprobs[k], one[i].logprobs[k])) << i << " " << k;
      ASSERT_EQ(many[i].prompt_logprobs.size(), one[i].prompt_logprobs.size()) << i;
      for (size_t k = 0; k < one[i].prompt_logprobs.size(); ++k) {
        ASSERT_EQ(many[i].prompt_logprobs[k].has_value(), one[i].prompt_logprobs[k].has_value());
        if (one[i].prompt_logprobs[k])
          EXPECT_TRUE(same(*many[i].prompt_logprobs[k], *one[i].prompt_logprobs[k])) << i;
      }
    }
  }
  size_t tokens = 0, with_logprobs = 0, prompt_logprobs = 0;
  for (const Result& r : one) {
    tokens += r.tokens.size();
    with_logprobs += r.logprobs.size();
    prompt_logprobs += r.prompt_logprobs.size();
  }
  // The batch did exercise every path.
  EXPECT_GT(tokens, 100u);
  EXPECT_GT(with_logprobs, 0u);
  EXPECT_GT(prompt_logprobs, 0u);
}

}  // namespace
}  // namespace relayllm
