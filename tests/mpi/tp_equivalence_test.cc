// Tensor parallelism under Open MPI (run by ctest as `mpirun -np N`, N = 2 and 4): the
// sharded forward gives the logits and greedy tokens of one rank, on every tiny
// architecture (GQA with fewer KV heads than ranks included), relay on and off, with
// chunked prefill and preemption, on the fp32 path and on the block-format (Q8_0)
// kernels. Every rank runs the same tests in the same order: rank 0 runs the engine and
// the one-rank reference and asserts, the others run the worker loop of each job.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>

#include "../common/generation_compare.h"
#include "../unit/tiny_models.h"
#include "relayllm/common/half.h"
#include "relayllm/dist/communicator.h"
#include "relayllm/dist/mpi_loader.h"
#include "relayllm/engine/tp_worker.h"
#include "relayllm/formats/gguf_dequant.h"
#include "relayllm/model/tensor_parallel.h"

namespace relayllm {
namespace {

// The job's communicator, made once by main (MPI initializes once per process).
std::shared_ptr<Communicator>& job() {
  static std::shared_ptr<Communicator> comm;
  return comm;
}

struct Workload {
  std::vector<int32_t> prefix_a, prefix_b;
  std::vector<std::vector<int32_t>> prompts;
};

Workload make_workload(uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto tokens = [&](int n) {
    std::vector<int32_t> t(n);
    for (auto& x : t) x = int32_t(rng() % 256);
    return t;
  };
  Workload w;
  w.prefix_a = tokens(37);
  w.prefix_b = tokens(21);
  const int own_lengths[] = {3, 29, 12, 1, 40, 7};
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> p = i % 3 == 0 ? w.prefix_a : i % 3 == 1 ? w.prefix_b : tokens(0);
    auto own = tokens(own_lengths[i]);
    p.insert(p.end(), own.begin(), own.end());
    w.prompts.push_back(p);
  }
  return w;
}

struct TpSetup {
  std::string arch;
  bool relay = false;
  int32_t blocks = 4096, budget = 4096;  // small: chunked prefill and preemption
  bool quantized = false;                // Q8_0 blocks (the integer kernels)
};

struct RunResult {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<std::vector<float>>> logits;
  SchedulerStats scheduler;
};

// Quantizes a weight to Q8_0 (d = max|x| / 127, as llama.cpp), rows of whole blocks.
void to_q8_0(HostTensor& t) {
  const size_t n = t.data.size();
  std::vector<std::byte> bytes(n / 32 * 34);
  for (size_t b = 0; b < n / 32; ++b) {
    const float* x = t.data.data() + 32 * b;
    uint8_t* out = reinterpret_cast<uint8_t*>(bytes.data() + b * 34);
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
    const uint16_t dh = float_to_fp16(amax / 127);
    std::memcpy(out, &dh, 2);
    const float id = amax != 0 ? 1 / fp16_to_float(dh) : 0;
    for (int i = 0; i < 32; ++i)
      out[2 + i] = uint8_t(int8_t(std::clamp<int>(int(std::lround(x[i] * id)), -127, 127)));
  }
  t.format = WeightFormat::kQ8_0;
  t.blocks = std::move(bytes);
  t.data.clear();
}

ModelConfig config_of(const TpSetup& s, int64_t vocab) {
  ModelConfig c = testing::tiny_config(s.arch, vocab);
  if (s.quantized) {
    // Rows of whole 32-value blocks, and every rank's columns of o_proj (one 32-wide head)
    // and down_proj whole blocks, so every weight keeps its blocks on every rank.
    c.hidden_size = 64;
    c.intermediate_size = 128;
    c.head_dim = 32;
  }
  return c;
}

// The model's weights, whole or as this rank's slices (cut from the whole model, the
// way every rank of a job sees the same model).
ModelWeights weights_of(const TpSetup& s, const ModelConfig& c, const ShardLayout* shard) {
  ModelWeights w = make_dummy_weights(c, 7);
  if (s.quantized)
    for (WeightSlot& slot : weight_slots(w, c))
      if (slot.kind == WeightKind::kLinear || slot.kind == WeightKind::kEmbedding)
        to_q8_0(*slot.tensor);
  if (!shard) return w;
  ModelWeights part = w;
  std::vector<WeightSlot> full = weight_slots(w, c), local = weight_slots(part, c);
  for (size_t i = 0; i < full.size(); ++i)
    *local[i].tensor = slice_host_tensor(*full[i].tensor, weight_slice(full[i], *shard));
  return part;
}

// One rank (comm null) or the whole job; the result is rank 0's.
RunResult run(const TpSetup& s, const Workload& w, std::shared_ptr<Communicator> comm) {
  Tokenizer tokenizer = Tokenizer::make_byte_tokenizer();
  const ModelConfig c = config_of(s, tokenizer.vocab_size());
  std::optional<ShardLayout> shard;
  if (comm) shard = shard_layout(c, comm->rank(), comm->size());
  ModelWeights weights = weights_of(s, c, shard ? &*shard : nullptr);
  auto backend = std::make_unique<CpuBackend>(1);
  if (comm && comm->rank() != 0) {
    run_tp_worker(c, weights, std::move(backend), comm);
    return {};
  }
  EngineConfig config;
  config.block_size = 4;
  config.num_kv_blocks = s.blocks;
  config.scheduler.max_num_batched_tokens = s.budget;
  config.enable_relay_attention = s.relay;
  config.capture_logits = true;
  if (comm) config.tensor_parallel = std::make_shared<TpChannel>(comm);
  Engine engine(c, weights, std::move(tokenizer), std::move(backend), config);
  if (s.relay) {
    engine.register_prefix("a", w.prefix_a);
    engine.register_prefix("b", w.prefix_b);
  }
  SamplingParams params;
  params.temperature = 0;
  params.max_tokens = 12;
  params.ignore_eos = true;
  std::vector<int64_t> ids;
  for (const auto& p : w.prompts) ids.push_back(engine.add_request(p, params));
  for (int guard = 0; engine.has_unfinished() && guard < 100000; ++guard) engine.step();
  RunResult result;
  for (int64_t id : ids) {
    result.tokens.push_back(engine.find(id)->output_ids);
    result.logits.push_back(engine.find(id)->captured_logits);
  }
  result.scheduler = engine.scheduler_stats();
  engine.block_pool().check_consistency();
  return result;
}

// Runs the setup on one rank and on the job and compares (rank 0).
void check_equal(const TpSetup& s, double tolerance) {
  const int rank = job()->rank();
  const Workload w = make_workload(42);
  RunResult reference;
  if (rank == 0) reference = run(s, w, nullptr);
  RunResult sharded = run(s, w, job());
  if (rank != 0) return;
  if (s.blocks < 4096) {
    EXPECT_GT(sharded.scheduler.num_preemptions, 0);
    EXPECT_GT(sharded.scheduler.num_chunked_prefills, 0);
  }
  testing::expect_same_generations(sharded, reference, tolerance,
                                   s.arch + (s.relay ? " relay" : "") + " sharded vs one rank");
}

class TensorParallel : public ::testing::TestWithParam<std::string> {};

TEST_P(TensorParallel, EqualsOneRankRelayOffAndOn) {
  check_equal({GetParam(), false}, 2e-5);
  check_equal({GetParam(), true}, 2e-5);
}

TEST_P(TensorParallel, EqualsOneRankUnderChunkingAndPreemption) {
  check_equal({GetParam(), true, 48, 16}, 2e-5);
  check_equal({GetParam(), false, 48, 16}, 2e-5);
}

INSTANTIATE_TEST_SUITE_P(AllArchitectures, TensorParallel,
                         ::testing::ValuesIn(testing::tiny_architectures()));

// The integer kernels quantize each linear op's input rows to 8 bits; the all-reduce sums
// in another order, which can flip a rounding, so logits agree to that rounding (the
// bound of the relay on/off comparison on these kernels) rather than to fp32's.
TEST(TensorParallelBlocks, Q8_0KernelsEqualOneRank) {
  TpSetup s{"llama2", true};
  s.quantized = true;
  check_equal(s, 2e-2);
}

TEST(TensorParallelLayout, KvHeadsFollowTheirQueryHeads) {
  if (job()->rank() != 0) return;
  ModelConfig c = testing::tiny_config("llama2", 256);  // 4 heads, 2 KV heads
  for (int size : {1, 2, 4})
    for (int r = 0; r < size; ++r) {
      ShardLayout s = shard_layout(c, r, size);
      // Query head h reads KV head h / (heads / kv heads): every local head's KV is local.
      for (int64_t h = s.first_head; h < s.first_head + s.num_heads; ++h) {
        const int64_t kv = h / (c.num_heads / c.num_kv_heads);
        EXPECT_GE(kv, s.first_kv_head);
        EXPECT_LT(kv, s.first_kv_head + s.num_kv_heads);
      }
    }
  c.num_kv_heads = 4;
  auto message = [&](int size) {
    try {
      shard_layout(c, 0, size);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(message(3).find("does not divide the model's 4 attention heads"), std::string::npos);
  c.num_heads = 12;
  c.num_kv_heads = 6;
  c.intermediate_size = 96;
  EXPECT_NE(message(4).find("does not divide the model's 6 KV heads"), std::string::npos);
  c.num_kv_heads = 3;  // fewer KV heads than ranks: the ranks must be a multiple of them
  EXPECT_NE(message(4).find("not a multiple of the model's 3 KV heads"), std::string::npos);
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.intermediate_size = 100;
  EXPECT_NE(message(8).find("intermediate_size 100"), std::string::npos);
  c.intermediate_size = 96;
  EXPECT_EQ(message(8), "");
}

// A row-parallel cut inside a block (here 16 of a Q8_0 row's 32 values) falls back to the
// dequantized values of this rank's columns; a block-aligned cut keeps the blocks.
TEST(TensorParallelLayout, UnalignedColumnCutsFallBackToFp32) {
  if (job()->rank() != 0) return;
  HostTensor t;
  t.shape = {3, 64};
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1, 1);
  for (int i = 0; i < 3 * 64; ++i) t.data.push_back(u(rng));
  to_q8_0(t);
  std::vector<float> all(3 * 64);
  dequantize_blocks(GgmlType::kQ8_0, t.blocks, 0, 6, all.data());
  for (auto [b, e] : {std::pair<int64_t, int64_t>{16, 48}, {32, 64}}) {
    HostTensor part = slice_host_tensor(t, {SliceAxis::kCols, b, e});
    ASSERT_EQ(part.shape, (std::vector<int64_t>{3, e - b}));
    std::vector<float> values(size_t(3 * (e - b)));
    if (b % 32 == 0) {
      EXPECT_EQ(part.format, WeightFormat::kQ8_0);
      dequantize_blocks(GgmlType::kQ8_0, part.blocks, 0, size_t(3 * (e - b) / 32), values.data());
    } else {
      EXPECT_EQ(part.format, WeightFormat::kNone);
      values = part.data;
    }
    for (int64_t r = 0; r < 3; ++r)
      for (int64_t c = b; c < e; ++c)
        EXPECT_EQ(values[size_t(r * (e - b) + c - b)], all[size_t(r * 64 + c)]);
  }
  HostTensor rows = slice_host_tensor(t, {SliceAxis::kRows, 1, 3});
  EXPECT_EQ(rows.format, WeightFormat::kQ8_0);
  EXPECT_EQ(rows.blocks.size(), size_t(2 * 2 * 34));
}

}  // namespace
}  // namespace relayllm

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  spdlog::set_level(spdlog::level::warn);
  try {
    relayllm::job() = relayllm::load_mpi_communicator();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  // Only rank 0 asserts and reports; the others run the workers' side of each test.
  if (relayllm::job()->rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int status = RUN_ALL_TESTS();
  relayllm::job().reset();  // MPI_Finalize on every rank
  return status;
}
