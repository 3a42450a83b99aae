// The op profile: the timer's intervals, the table's arithmetic, the bytes and
// FLOPs counted for attention, and a profiled engine that computes exactly what an
// unprofiled one does while recording every op of every step.
#include "relayllm/backend/op_profile.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "relayllm/backend/profiling_backend.h"
#include "tiny_models.h"

namespace relayllm {
namespace {

TEST(OpProfile, HostTimerGivesOneIntervalPerPairOfMarksAndForgetsThem) {
  HostOpTimer timer;
  EXPECT_TRUE(timer.read_ms().empty());
  timer.mark();
  EXPECT_TRUE(timer.read_ms().empty());
  timer.mark();
  timer.mark();
  timer.mark();
  std::vector<double> ms = timer.read_ms();
  ASSERT_EQ(ms.size(), 2u);
  for (double t : ms) EXPECT_GE(t, 0.0);
  EXPECT_TRUE(timer.read_ms().empty());
}

TEST(OpProfile, TablePerStepWithFloorsAndFractions) {
  OpProfile profile;
  for (int step = 0; step < 2; ++step) {
    profile.add_step(StepKind::kDecode);
    profile.add_op(StepKind::kDecode, "linear 8x4", 2.0, 4e6, 8e9);  // 2 ms, 4 MB, 8 GFLOP
    profile.add_op(StepKind::kDecode, "rope", 0.5, 1e6, 0);
    profile.add_op(StepKind::kDecode, OpProfile::kIdle, 0.25, 0, 0);
  }
  profile.add_step(StepKind::kPrefill);
  profile.add_op(StepKind::kPrefill, "rope", 7.0, 1e6, 0);
  EXPECT_EQ(profile.steps(StepKind::kDecode), 2);
  EXPECT_DOUBLE_EQ(profile.step_ms(StepKind::kDecode), 2.75);
  EXPECT_DOUBLE_EQ(profile.step_ms(StepKind::kPrefill), 7.0);

  std::string plain = profile.table(StepKind::kDecode);
  EXPECT_NE(plain.find("2 decode steps, op by op: 2.750 ms per step, 5.0 MB moved per step\n"),
            std::string::npos)
      << plain;
  EXPECT_EQ(plain.find("floor"), std::string::npos) << plain;
  // Largest first: 2000 us per step, 72.7% of the step, 4 MB at 2 GB/s, 4 TFLOP/s.
  EXPECT_NE(plain.find("| linear 8x4 | 1.0 | 2000.0 | 72.7% | 4.00 | 2 | 4.00 |\n| rope |"),
            std::string::npos)
      << plain;

  profile.set_copy_bandwidth(4e9);  // 4 MB take 1000 us at 4 GB/s: half the op's time
  std::string with_floor = profile.table(StepKind::kDecode);
  EXPECT_NE(with_floor.find("floor 1.250 ms at 4 GB/s copy bandwidth (45.5% of it achieved)"),
            std::string::npos)
      << with_floor;
  EXPECT_NE(
      with_floor.find("| linear 8x4 | 1.0 | 2000.0 | 72.7% | 4.00 | 2 | 1000.0 | 50.0% | 4.00 |"),
      std::string::npos)
      << with_floor;
  EXPECT_NE(with_floor.find("| (idle between ops) | 1.0 | 250.0 | 9.1% | 0.00 | - | - | - | - |"),
            std::string::npos)
      << with_floor;
  EXPECT_EQ(OpProfile().table(StepKind::kDecode), "no decode steps profiled\n");
}

TEST(OpProfile, AttentionCostCountsEachKvOnceAndCausalPairs) {
  Tensor q{nullptr, DType::kBF16, {5, 4, 8}};  // 5 rows, 4 query heads, head_dim 8
  KvLayer kv{Tensor{nullptr, DType::kBF16, {10, 4, 2, 8}},
             Tensor{nullptr, DType::kBF16, {10, 4, 2, 8}}};
  AttentionShape shape{4, 2, 8, 1.0f};
  BatchPlan plan;
  // A decode row with 10 own tokens after a 100-token relay prefix, and a 4-token
  // causal prefill with no prefix.
  plan.sequences.push_back({0, 1, 10, 100, 0, 3, 0});
  plan.sequences.push_back({1, 4, 4, 0, 3, 1, -1});
  plan.prefix_groups.push_back({100, 4, 25, {0}});
  const AttentionCost cost = attention_cost(q, kv, shape, plan);
  const double kv_token = 2.0 * 2 * 8 * 2;  // K and V, 2 KV heads, head_dim 8, bf16
  EXPECT_DOUBLE_EQ(cost.bytes, 2.0 * 5 * 4 * 8 * 2 + kv_token * (10 + 4 + 100));
  const double pair = 4.0 * 4 * 8;  // QK^T and PV over 4 query heads of head_dim 8
  EXPECT_DOUBLE_EQ(cost.flops, pair * ((10 + 100) + (1 + 2 + 3 + 4)));
}

struct Generated {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<std::vector<float>>> logits;
};

Generated generate(std::shared_ptr<OpProfile> profile) {
  EngineConfig config;
  config.block_size = 4;
  config.num_kv_blocks = 64;
  config.enable_relay_attention = true;
  config.capture_logits = true;
  Tokenizer tokenizer = Tokenizer::make_byte_tokenizer();
  ModelConfig model = testing::tiny_config("llama2", tokenizer.vocab_size());
  std::unique_ptr<Backend> backend = std::make_unique<CpuBackend>(2);
  if (profile) backend = std::make_unique<ProfilingBackend>(std::move(backend), profile);
  Engine engine(model, make_dummy_weights(model, 3), std::move(tokenizer), std::move(backend),
                config);
  std::vector<int32_t> prefix(13, 0);
  for (size_t i = 0; i < prefix.size(); ++i) prefix[i] = int32_t(40 + 7 * i);
  engine.register_prefix("system", prefix);
  SamplingParams params;
  params.temperature = 0;
  params.max_tokens = 6;
  params.ignore_eos = true;
  std::vector<int64_t> ids;
  for (int r = 0; r < 3; ++r) {
    std::vector<int32_t> prompt = prefix;
    for (int i = 0; i <= r * 3; ++i) prompt.push_back(100 + 11 * i + r);
    ids.push_back(engine.add_request(prompt, params));
  }
  while (engine.has_unfinished()) engine.step();
  Generated run;
  for (int64_t id : ids) {
    run.tokens.push_back(engine.find(id)->output_ids);
    run.logits.push_back(engine.find(id)->captured_logits);
  }
  return run;
}

TEST(OpProfile, ProfiledEngineComputesTheSameAndRecordsEveryOp) {
  auto profile = std::make_shared<OpProfile>();
  Generated plain = generate(nullptr);
  Generated profiled = generate(profile);
  EXPECT_EQ(profiled.tokens, plain.tokens);
  EXPECT_EQ(profiled.logits, plain.logits);

  // 6 tokens each: the prefill gives the first, five decode steps the rest.
  ASSERT_EQ(profile->steps(StepKind::kDecode), 5);
  EXPECT_GE(profile->steps(StepKind::kPrefill), 1);
  const ModelConfig model =
      testing::tiny_config("llama2", Tokenizer::make_byte_tokenizer().vocab_size());
  const auto& ops = profile->ops(StepKind::kDecode);
  const int64_t layers = model.num_layers, steps = 5;
  auto calls = [&](const std::string& label) {
    auto it = ops.find(label);
    return it == ops.end() ? int64_t(-1) : it->second.calls;
  };
  EXPECT_EQ(calls("attention (relay)"), layers * steps);
  EXPECT_EQ(calls("rope + write_kv"), layers * steps);
  EXPECT_EQ(calls("embedding"), steps);
  EXPECT_EQ(calls("logits to host"), steps);
  EXPECT_EQ(calls("step staging"), steps);
  EXPECT_EQ(calls(OpProfile::kIdle), steps);
  int64_t linear_calls = 0;
  for (const auto& [label, s] : ops) {
    if (label.rfind("linear ", 0) == 0) linear_calls += s.calls;
    EXPECT_GE(s.ms, 0.0) << label;
  }
  // q/k/v (one stacked weight), o, gate/up with silu_mul, down, and the lm_head.
  EXPECT_EQ(linear_calls, (4 * layers + 1) * steps);
  EXPECT_EQ(calls(fmt::format("linear {}x{} (3 fused)",
                              (model.num_heads + 2 * model.num_kv_heads) * model.head_dim,
                              model.hidden_size)),
            layers * steps);
  EXPECT_EQ(
      calls(fmt::format("linear {}x{} + silu_mul", 2 * model.intermediate_size, model.hidden_size)),
      layers * steps);
  // The lm_head reads the whole [vocab, hidden] weight each step.
  const auto& head = ops.at(fmt::format("linear {}x{}", model.vocab_size, model.hidden_size));
  EXPECT_GE(head.bytes, double(steps) * 4.0 * double(model.vocab_size * model.hidden_size));
  EXPECT_DOUBLE_EQ(head.flops,
                   double(steps) * 3 * 2.0 * double(model.vocab_size * model.hidden_size));
  EXPECT_GT(profile->step_ms(StepKind::kDecode), 0.0);

  // Not recording: the engine still runs, the profile stays as it was.
  profile->set_recording(false);
  Generated again = generate(profile);
  EXPECT_EQ(again.tokens, plain.tokens);
  EXPECT_EQ(profile->steps(StepKind::kDecode), 5);
}

}  // namespace
}  // namespace relayllm
