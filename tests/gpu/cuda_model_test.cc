// The whole model on the CUDA backend: against the logits transformers computed
// (tests/data/hf_fixtures), against the CPU backend on the same bf16-rounded
// weights, and relay on against relay off on long greedy generations.
//
// Bounds. The GPU keeps weights, activations and KV in bf16 (8-bit mantissa, a
// rounding of 2^-9 = 2e-3 relative each time a value is stored), so a two-layer
// model's logits carry a few such roundings: we accept a relative L2 error of
// kLogitBound = 3e-2 against references computed in fp32. Relay on and relay off
// run the same kernels on the same KV and differ only in how the fp32 partial
// results are merged; a bf16 store can round either way on such a difference, so a
// greedy choice may flip where the top two logits are within bf16 noise. The
// relay test therefore demands identical tokens, except that a divergence whose
// top-two gap in the reference is under kTieBound of the logit scale is counted
// as a tie (and printed) instead of failing. The relay test also runs in fp16,
// whose finer logits leave far fewer ties, so most generations compare whole.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <tuple>

#include "../common/paged_forward.h"
#include "../unit/tiny_models.h"
#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/backend/cuda/cuda_backend.h"
#include "relayllm/backend/profiling_backend.h"
#include "relayllm/common/half.h"
#include "relayllm/engine/engine.h"
#include "relayllm/model/llama_model.h"
#include "relayllm/model/model_config.h"
#include "relayllm/model/model_weights.h"
#include "relayllm/tokenizer/tokenizer.h"

namespace relayllm {
namespace {

using testing::fixture_dir;
using testing::relative_error;
using testing::run_paged;

constexpr double kLogitBound = 3e-2;
constexpr double kTieBound = 2e-2;

// The weights the GPU will compute with, so a CPU reference sees the same numbers.
ModelWeights round_to_bf16(ModelWeights weights, const ModelConfig& config) {
  for (WeightSlot& slot : weight_slots(weights, config))
    for (float& x : slot.tensor->data) x = bf16_to_float(float_to_bf16(x));
  return weights;
}

// ---------------------------------------------------------------- HF fixtures

class GpuHfLogits : public ::testing::TestWithParam<std::string> {};

TEST_P(GpuHfLogits, MatchesTransformersAndCpu) {
  const std::string name = GetParam();
  ModelConfig config = parse_model_config(fixture_dir(name) / "config.json");
  ModelWeights weights = load_weights(fixture_dir(name), config);
  std::ifstream in(fixture_dir(name) / "expected.json");
  nlohmann::json expected = nlohmann::json::parse(in);

  CudaBackend gpu;
  LlamaModel gpu_model(config, weights, gpu, config.max_position_embeddings);
  CpuBackend cpu(2);
  ModelWeights rounded = round_to_bf16(weights, config);
  LlamaModel cpu_model(config, rounded, cpu, config.max_position_embeddings);

  double worst_hf = 0, worst_cpu = 0;
  for (const auto& seq : expected["sequences"]) {
    auto tokens = seq["input_ids"].get<std::vector<int32_t>>();
    auto want = seq["logits"].get<std::vector<std::vector<float>>>();
    const int32_t n = int32_t(tokens.size());
    struct Variant {
      const char* name;
      int32_t prefix_len;
      int32_t chunk;
    };
    const Variant variants[] = {{"whole prompt", 0, n},
                                {"chunks of 5", 0, 5},
                                {"token by token", 0, 1},
                                {"relay prefix 7, whole rest", 7, n},
                                {"relay prefix 9, decode", 9, 1}};
    for (const Variant& v : variants) {
      auto rows = run_paged(gpu_model, tokens, v.prefix_len, v.chunk);
      auto cpu_rows = run_paged(cpu_model, tokens, v.prefix_len, v.chunk);
      ASSERT_EQ(int32_t(rows.size()), n - v.prefix_len);
      for (int32_t r = 0; r < int32_t(rows.size()); ++r) {
        double e_hf = relative_error(rows[r], want[v.prefix_len + r]);
        double e_cpu = relative_error(rows[r], cpu_rows[r]);
        worst_hf = std::max(worst_hf, e_hf);
        worst_cpu = std::max(worst_cpu, e_cpu);
        EXPECT_LT(e_hf, kLogitBound) << name << " (" << v.name << ") position " << v.prefix_len + r;
        EXPECT_LT(e_cpu, kLogitBound)
            << name << " vs cpu (" << v.name << ") position " << v.prefix_len + r;
      }
    }
  }
  std::printf("[gpu-hf] %s: worst relative logit error vs transformers %.2e, vs cpu backend %.2e\n",
              name.c_str(), worst_hf, worst_cpu);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GpuHfLogits,
                         ::testing::Values("llama2", "llama3", "mistral", "qwen2", "qwen3"));

// ---------------------------------------------------------------- engines

// Tiny models with the head sizes the kernels serve: the CPU tests' tiny models (whose
// head_dim 12 the tensor-core tiles do not take) made wider, and two of real layer shapes.
ModelConfig gpu_tiny_config(const std::string& kind, int64_t vocab) {
  ModelConfig c = testing::tiny_config(kind, vocab);  // the 7B/8B kinds start from llama2's
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.head_dim = 64;
  c.max_position_embeddings = 2048;
  if (kind == "llama3") {
    c.rope.original_max_position_embeddings = 256;
    c.num_heads = 8;
    c.num_kv_heads = 1;  // GQA ratio 8
    c.head_dim = 32;
  } else if (kind == "qwen3") {
    c.head_dim = 128;  // explicit, differs from hidden / heads
  } else if (kind == "llama2-7b-2layer") {
    c.hidden_size = 4096;
    c.intermediate_size = 11008;
    c.num_heads = 32;
    c.num_kv_heads = 32;
    c.head_dim = 128;
    c.max_position_embeddings = 4096;
  } else if (kind == "llama3-8b-2layer") {
    c.hidden_size = 4096;
    c.intermediate_size = 14336;
    c.num_heads = 32;
    c.num_kv_heads = 8;
    c.head_dim = 128;
    c.rope.theta = 500000;
    c.max_position_embeddings = 4096;
  }
  return c;
}

struct Workload {
  std::vector<std::vector<int32_t>> prefixes;
  std::vector<std::vector<int32_t>> prompts;
};

// Three prefix groups of odd lengths, requests without a prefix, own parts from
// 1 to 70 tokens: decode rows, prefill chunks and relay groups share steps.
Workload make_workload(uint64_t seed, int32_t vocab) {
  std::mt19937_64 rng(seed);
  auto tokens = [&](int n) {
    std::vector<int32_t> t(n);
    for (auto& x : t) x = int32_t(3 + rng() % uint64_t(vocab - 3));
    return t;
  };
  Workload w;
  w.prefixes = {tokens(301), tokens(517), tokens(45)};
  const int own[] = {3, 29, 12, 1, 70, 7, 18, 25, 40, 9, 33, 2};
  for (int i = 0; i < 12; ++i) {
    std::vector<int32_t> p;
    if (i % 4 < 3) p = w.prefixes[size_t(i % 4)];
    auto o = tokens(own[i]);
    p.insert(p.end(), o.begin(), o.end());
    w.prompts.push_back(p);
  }
  return w;
}

struct RunResult {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<std::vector<float>>> logits;
  int64_t relay_attached = 0;
  int64_t graph_steps = 0;
  int64_t steps = 0;
};

// Steps `engine` until every request is done; the requests' tokens and logits, in `ids`' order.
RunResult finish(Engine& engine, const std::vector<int64_t>& ids) {
  for (int guard = 0; engine.has_unfinished() && guard < 100000; ++guard) engine.step();
  EXPECT_FALSE(engine.has_unfinished());
  RunResult result;
  for (int64_t id : ids) {
    const Sequence* seq = engine.find(id);
    result.tokens.push_back(seq->output_ids);
    result.logits.push_back(seq->captured_logits);
  }
  result.relay_attached = engine.stats().relay_attached_requests;
  result.graph_steps = engine.stats().graph_steps;
  result.steps = engine.stats().steps;
  return result;
}

// How two runs of the same requests agree: the requests whose tokens are all equal, and the
// worst relative logit difference over the rows up to and including each request's first
// divergence (the rows sampled from the same history).
struct Agreement {
  size_t equal = 0;
  size_t compared = 0;
  double worst = 0;
};

Agreement agreement(const RunResult& got, const RunResult& ref) {
  Agreement a;
  for (size_t r = 0; r < ref.tokens.size(); ++r) {
    a.equal += got.tokens[r] == ref.tokens[r];
    for (size_t s = 0; s < ref.tokens[r].size(); ++s) {
      a.worst = std::max(a.worst, relative_error(got.logits[r][s], ref.logits[r][s]));
      ++a.compared;
      if (got.tokens[r][s] != ref.tokens[r][s]) break;
    }
  }
  return a;
}

// How a run differs from the default: decode steps op by op instead of as graph
// replays, and requests of different lengths (so the batch shrinks through the
// graph buckets as they finish).
struct RunMode {
  bool eager = false;
  bool staggered = false;
};

RunResult run_engine(const ModelConfig& model, const ModelWeights& weights,
                     std::unique_ptr<Backend> backend, const Workload& w, bool relay,
                     int32_t max_tokens, int32_t budget, RunMode mode = {}) {
  EngineConfig config;
  config.block_size = 16;
  config.num_kv_blocks = 2048;
  config.scheduler.max_num_batched_tokens = budget;
  config.enable_relay_attention = relay;
  config.capture_logits = true;
  config.enforce_eager = mode.eager;
  Engine engine(model, weights, Tokenizer::make_byte_tokenizer(), std::move(backend), config);
  if (relay)
    for (size_t i = 0; i < w.prefixes.size(); ++i)
      engine.register_prefix("p" + std::to_string(i), w.prefixes[i]);
  SamplingParams params;
  params.temperature = 0;
  params.max_tokens = max_tokens;
  params.ignore_eos = true;
  std::vector<int64_t> ids;
  for (size_t i = 0; i < w.prompts.size(); ++i) {
    if (mode.staggered)
      params.max_tokens = max_tokens - int32_t(i) * (max_tokens / int32_t(w.prompts.size() + 1));
    ids.push_back(engine.add_request(w.prompts[i], params));
  }
  return finish(engine, ids);
}

// Equal tokens, or a first divergence at a near-tie of `ref`'s logits. Returns the
// number of requests that diverged (at ties).
int compare_greedy(const RunResult& got, const RunResult& ref, const std::string& what) {
  int ties = 0;
  for (size_t r = 0; r < ref.tokens.size(); ++r) {
    const auto& a = got.tokens[r];
    const auto& b = ref.tokens[r];
    EXPECT_EQ(a.size(), b.size()) << what << " request " << r;
    size_t s = 0;
    while (s < std::min(a.size(), b.size()) && a[s] == b[s]) ++s;
    if (s == std::min(a.size(), b.size())) continue;
    const auto& row = ref.logits[r][s];
    double scale = 0;
    for (float x : row) scale = std::max(scale, double(std::fabs(x)));
    double gap = double(row[size_t(b[s])]) - double(row[size_t(a[s])]);
    std::printf(
        "[gpu-engine] %s: request %zu diverges at step %zu of %zu (tokens %d vs %d, "
        "reference gap %.3e, %.2e of the logit scale)\n",
        what.c_str(), r, s, b.size(), a[s], b[s], gap, gap / scale);
    EXPECT_LT(gap, kTieBound * scale) << what << " request " << r << " step " << s << ": not a tie";
    ++ties;
  }
  return ties;
}

class GpuEngine : public ::testing::TestWithParam<std::string> {};

// The CUDA engine against the CPU engine on the same bf16 weights: every
// captured logits row up to each request's first divergence within kLogitBound,
// and divergences only at ties.
TEST_P(GpuEngine, MatchesCpuEngine) {
  const std::string kind = GetParam();
  const int32_t vocab = Tokenizer::make_byte_tokenizer().vocab_size();
  ModelConfig model = gpu_tiny_config(kind, vocab);
  ModelWeights weights = round_to_bf16(make_dummy_weights(model, 11), model);
  Workload w = make_workload(5, vocab);
  RunResult cpu = run_engine(model, weights, std::make_unique<CpuBackend>(4), w, false, 24, 256);
  RunResult gpu = run_engine(model, weights, std::make_unique<CudaBackend>(), w, false, 24, 256);
  RunResult gpu_relay =
      run_engine(model, weights, std::make_unique<CudaBackend>(), w, true, 24, 256);
  double worst = 0, worst_relay = 0;
  int64_t rows = 0;
  for (size_t r = 0; r < cpu.tokens.size(); ++r) {
    for (size_t s = 0; s < cpu.tokens[r].size(); ++s) {
      worst = std::max(worst, relative_error(gpu.logits[r][s], cpu.logits[r][s]));
      worst_relay = std::max(worst_relay, relative_error(gpu_relay.logits[r][s], cpu.logits[r][s]));
      ++rows;
      if (gpu.tokens[r][s] != cpu.tokens[r][s] || gpu_relay.tokens[r][s] != cpu.tokens[r][s]) break;
    }
  }
  EXPECT_LT(worst, kLogitBound);
  EXPECT_LT(worst_relay, kLogitBound);
  int ties = compare_greedy(gpu, cpu, kind + " gpu vs cpu");
  int ties_relay = compare_greedy(gpu_relay, cpu, kind + " gpu relay vs cpu");
  std::printf(
      "[gpu-engine] %s: %lld logit rows, worst relative error gpu %.2e, gpu+relay %.2e vs cpu; "
      "diverging requests (ties) %d / %d of %zu\n",
      kind.c_str(), (long long)rows, worst, worst_relay, ties, ties_relay, cpu.tokens.size());
}

INSTANTIATE_TEST_SUITE_P(Tiny, GpuEngine,
                         ::testing::Values("llama2", "llama3", "mistral", "qwen2", "qwen3"));

class GpuRelay : public ::testing::TestWithParam<std::tuple<std::string, DType>> {};

// 200 greedy tokens per request, twelve requests, three prefix groups. In fp16
// (3 more mantissa bits than bf16) logit ties are rarer, so more of each
// generation is compared token for token.
TEST_P(GpuRelay, RelayOnEqualsRelayOffOnLongGenerations) {
  const auto [kind, dtype] = GetParam();
  const std::string label = kind + (dtype == DType::kF16 ? " fp16" : " bf16");
  const int32_t vocab = Tokenizer::make_byte_tokenizer().vocab_size();
  ModelConfig model = gpu_tiny_config(kind, vocab);
  ModelWeights weights = make_dummy_weights(model, 23);
  Workload w = make_workload(9, vocab);
  CudaBackendOptions options;
  options.dtype = dtype;
  RunResult off =
      run_engine(model, weights, std::make_unique<CudaBackend>(options), w, false, 200, 512);
  RunResult on =
      run_engine(model, weights, std::make_unique<CudaBackend>(options), w, true, 200, 512);
  EXPECT_EQ(on.relay_attached, 9);
  int ties = compare_greedy(on, off, label + " relay on vs off");
  const Agreement a = agreement(on, off);
  EXPECT_LT(a.worst, kLogitBound) << label;
  std::printf(
      "[gpu-relay] %s: %zu of %zu requests identical over 200 tokens (%d diverged at ties); "
      "%zu tokens compared, worst relative logit difference %.2e\n",
      label.c_str(), a.equal, off.tokens.size(), ties, a.compared, a.worst);
}

INSTANTIATE_TEST_SUITE_P(Models, GpuRelay,
                         ::testing::Combine(::testing::Values("llama2", "llama3", "mistral",
                                                              "qwen2", "qwen3", "llama2-7b-2layer",
                                                              "llama3-8b-2layer"),
                                            ::testing::Values(DType::kBF16, DType::kF16)));

// ---------------------------------------------------------------- automatic relay

// A prefix tree of depth 3 with nothing registered: a system prompt for all, three
// documents under it, two sub-parts under each, questions of their own (lengths on
// block boundaries or not); some prompts twice (n > 1 as the engine sees it) and
// prompts without the system prompt beside them.
std::vector<std::vector<int32_t>> make_tree_prompts(uint64_t seed, int32_t vocab,
                                                    std::vector<int32_t>* system) {
  std::mt19937_64 rng(seed);
  auto tokens = [&](int lo, int hi) {
    std::vector<int32_t> t(size_t(lo + int(rng() % uint64_t(hi - lo + 1))));
    for (auto& x : t) x = int32_t(3 + rng() % uint64_t(vocab - 3));
    return t;
  };
  auto cat = [](std::vector<int32_t> a, const std::vector<int32_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  *system = tokens(100, 180);
  std::vector<std::vector<int32_t>> prompts;
  for (int doc = 0; doc < 3; ++doc) {
    // A sub-part of 48 tokens or more holds three full blocks of its own wherever it
    // starts: a level of two requests pays at every shape (docs/relay_attention.md).
    const auto with_doc = cat(*system, tokens(64, 300));
    for (int part = 0; part < 2; ++part) {
      const auto with_part = cat(with_doc, tokens(48, 100));
      for (int q = 0; q < 2 + int(rng() % 2); ++q) {
        prompts.push_back(cat(with_part, tokens(1, 40)));
        if (rng() % 5 == 0) prompts.push_back(prompts.back());
      }
    }
    prompts.push_back(cat(with_doc, tokens(1, 30)));  // shares the document, no part
  }
  for (int i = 0; i < 2; ++i) prompts.push_back(tokens(5, 120));
  return prompts;
}

struct TreeMode {
  bool relay = false;
  bool caching = true;
  bool register_system = false;
  int32_t blocks = 2048;
  int32_t budget = 512;
};

RunResult run_tree(const ModelConfig& model, const ModelWeights& weights,
                   const CudaBackendOptions& options, const std::vector<int32_t>& system,
                   const std::vector<std::vector<int32_t>>& prompts, int32_t max_tokens,
                   const TreeMode& mode, EngineStats* stats) {
  EngineConfig config;
  config.block_size = 16;
  config.num_kv_blocks = mode.blocks;
  config.scheduler.max_num_batched_tokens = mode.budget;
  config.scheduler.enable_prefix_caching = mode.caching;
  config.enable_relay_attention = mode.relay;
  config.capture_logits = true;
  Engine engine(model, weights, Tokenizer::make_byte_tokenizer(),
                std::make_unique<CudaBackend>(options), config);
  if (mode.register_system) engine.register_prefix("system", system);
  SamplingParams params;
  params.temperature = 0;
  params.ignore_eos = true;
  std::vector<int64_t> ids;
  // Arrivals over the first steps: later requests find earlier ones' blocks cached.
  for (size_t i = 0; i < prompts.size(); ++i) {
    params.max_tokens = max_tokens - int32_t(i % 5) * (max_tokens / 8);
    ids.push_back(engine.add_request(prompts[i], params));
    if (i % 4 == 3) engine.step();
  }
  RunResult result = finish(engine, ids);
  *stats = engine.stats();
  return result;
}

class GpuAutoRelay : public ::testing::TestWithParam<std::tuple<std::string, DType>> {};

// Automatic relay on the CUDA backend (nested groups of depth up to 3 from the
// prefix cache, decode graphs on) against relay off without sharing: the same
// greedy tokens up to ties and logits within kLogitBound; also with the system
// prompt registered (automatic levels inside a pinned group), and under a pool and
// budget small enough to preempt, evict and chunk.
TEST_P(GpuAutoRelay, RelayOnEqualsRelayOffOnATree) {
  const auto [kind, dtype] = GetParam();
  const std::string label = kind + (dtype == DType::kF16 ? " fp16" : " bf16");
  const int32_t vocab = Tokenizer::make_byte_tokenizer().vocab_size();
  ModelConfig model = gpu_tiny_config(kind, vocab);
  ModelWeights weights = make_dummy_weights(model, 41);
  std::vector<int32_t> system;
  const auto prompts = make_tree_prompts(17 + kind.size(), vocab, &system);
  CudaBackendOptions options;
  options.dtype = dtype;
  EngineStats off_stats, stats;
  const RunResult off =
      run_tree(model, weights, options, system, prompts, 48, {false, false}, &off_stats);
  struct Case {
    const char* name;
    TreeMode mode;
  };
  for (const Case& c :
       {Case{"auto", {true, true, false}}, Case{"registered system + auto", {true, true, true}},
        Case{"auto, pressure", {true, true, false, 120, 64}}}) {
    const RunResult on = run_tree(model, weights, options, system, prompts, 48, c.mode, &stats);
    const std::string what = label + " " + c.name;
    EXPECT_GT(stats.relay_auto_groups, 0) << what;
    EXPECT_GE(stats.max_relay_depth, c.mode.blocks < 2048     ? 1
                                     : c.mode.register_system ? 2
                                                              : 3)
        << what;
    if (c.mode.register_system) EXPECT_GT(stats.relay_attached_requests, 0) << what;
    int ties = compare_greedy(on, off, what + " vs relay off");
    const Agreement a = agreement(on, off);
    EXPECT_LT(a.worst, kLogitBound) << what;
    std::printf(
        "[gpu-auto-relay] %s: %zu of %zu requests identical (%d diverged at ties); %zu rows, "
        "worst relative logit difference %.2e; %lld automatic groups, depth %d, %lld graph "
        "steps of %lld\n",
        what.c_str(), a.equal, off.tokens.size(), ties, a.compared, a.worst,
        (long long)stats.relay_auto_groups, stats.max_relay_depth, (long long)on.graph_steps,
        (long long)on.steps);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, GpuAutoRelay,
                         ::testing::Combine(::testing::Values("llama2", "llama3", "mistral",
                                                              "qwen3", "llama3-8b-2layer"),
                                            ::testing::Values(DType::kBF16, DType::kF16)));

class GpuGraphs : public ::testing::TestWithParam<std::tuple<std::string, bool>> {};

// Decode steps replayed from captured graphs against the same steps run op by op:
// twelve requests of different lengths, so the batch passes through the buckets
// 16, 8, 4, 2, 1 (padding rows included) while contexts grow (the staged arrays
// grow and graphs are captured again). The graph differs from the eager step only
// in the GEMMs' row count (the bucket's), which may pick another cuBLASLt
// algorithm; so logits agree to 16-bit precision and tokens up to ties.
TEST_P(GpuGraphs, DecodeGraphsEqualEagerSteps) {
  const auto [kind, relay] = GetParam();
  const std::string label = kind + (relay ? " relay" : "");
  const int32_t vocab = Tokenizer::make_byte_tokenizer().vocab_size();
  ModelConfig model = gpu_tiny_config(kind, vocab);
  ModelWeights weights = make_dummy_weights(model, 31);
  Workload w = make_workload(13, vocab);
  RunResult eager = run_engine(model, weights, std::make_unique<CudaBackend>(), w, relay, 120, 512,
                               RunMode{true, true});
  RunResult graphs = run_engine(model, weights, std::make_unique<CudaBackend>(), w, relay, 120, 512,
                                RunMode{false, true});
  EXPECT_EQ(eager.graph_steps, 0);
  EXPECT_GT(graphs.graph_steps, graphs.steps / 2) << label << ": most steps are decode-only";
  if (relay) EXPECT_EQ(graphs.relay_attached, 9);
  int ties = compare_greedy(graphs, eager, label + " graphs vs eager");
  const Agreement a = agreement(graphs, eager);
  EXPECT_LT(a.worst, kLogitBound) << label;
  std::printf(
      "[gpu-graphs] %s: %lld of %lld steps replayed graphs; %zu of %zu requests identical "
      "(%d diverged at ties); %zu rows compared, worst relative logit difference %.2e\n",
      label.c_str(), (long long)graphs.graph_steps, (long long)graphs.steps, a.equal,
      eager.tokens.size(), ties, a.compared, a.worst);
}

INSTANTIATE_TEST_SUITE_P(Models, GpuGraphs,
                         ::testing::Combine(::testing::Values("llama2", "llama3", "qwen3",
                                                              "llama3-8b-2layer"),
                                            ::testing::Bool()));

// The op profile on the device: a profiled engine runs every step op by op (no
// graphs while recording) and computes what the plain eager engine does; the CUDA
// timer gives every op a time; a profile that does not record forwards graphs.
TEST(GpuProfile, ProfiledStepsEqualEagerStepsAndEveryOpIsTimed) {
  const int32_t vocab = Tokenizer::make_byte_tokenizer().vocab_size();
  ModelConfig model = gpu_tiny_config("llama3", vocab);
  ModelWeights weights = make_dummy_weights(model, 31);
  Workload w = make_workload(13, vocab);
  auto profile = std::make_shared<OpProfile>();
  RunResult eager = run_engine(model, weights, std::make_unique<CudaBackend>(), w, true, 40, 512,
                               RunMode{true, false});
  RunResult profiled = run_engine(
      model, weights, std::make_unique<ProfilingBackend>(std::make_unique<CudaBackend>(), profile),
      w, true, 40, 512);
  EXPECT_EQ(profiled.graph_steps, 0);
  compare_greedy(profiled, eager, "profiled vs eager");
  EXPECT_GT(profile->copy_bandwidth(), 1e11) << "the CUDA backend measures its copy bandwidth";
  EXPECT_GT(profile->steps(StepKind::kDecode), 20);
  const auto& ops = profile->ops(StepKind::kDecode);
  // Steps with a prefix group attached run "attention (relay)", the others (when only
  // requests without a prefix decode) "attention".
  ASSERT_TRUE(ops.count("attention (relay)"));
  const int64_t attention_calls =
      ops.at("attention (relay)").calls + (ops.count("attention") ? ops.at("attention").calls : 0);
  EXPECT_EQ(attention_calls, profile->steps(StepKind::kDecode) * model.num_layers);
  // Every kernel-launching op takes time (the staging may be copies too small to time).
  for (const auto& [label, s] : ops)
    if (label != OpProfile::kIdle && label != "step staging") EXPECT_GT(s.ms, 0.0) << label;
  std::printf("[gpu-profile]\n%s\n", profile->table(StepKind::kDecode).c_str());

  profile->set_recording(false);
  const int64_t decode_steps = profile->steps(StepKind::kDecode);
  RunResult forwarded = run_engine(
      model, weights, std::make_unique<ProfilingBackend>(std::make_unique<CudaBackend>(), profile),
      w, true, 40, 512);
  EXPECT_GT(forwarded.graph_steps, 0) << "graphs pass through a profile that does not record";
  EXPECT_EQ(profile->steps(StepKind::kDecode), decode_steps);
}

}  // namespace
}  // namespace relayllm

namespace relayllm {
namespace {

class GpuDecodeKernels : public ::testing::TestWithParam<std::tuple<std::string, DType>> {};

// The decode step's kernels against the step before them, whole model, decode steps
// as graph replays: the reference runs cuBLASLt for every projection on separate
// weights with rope and write_kv apart; the others stack q/k/v and gate/up and run
// the skinny GEMM on every decode step (up to 32 rows: the buckets 16 .. 1 of twelve
// staggered requests) or up to 8 rows with programmatic launches. Logits agree to
// 16-bit precision, tokens up to ties.
TEST_P(GpuDecodeKernels, SkinnyFusedAndProgrammaticMatchTheCublasStep) {
  const auto [kind, dtype] = GetParam();
  const std::string label = kind + (dtype == DType::kF16 ? " fp16" : " bf16");
  const int32_t vocab = Tokenizer::make_byte_tokenizer().vocab_size();
  ModelConfig model = gpu_tiny_config(kind, vocab);
  ModelWeights weights = make_dummy_weights(model, 41);
  Workload w = make_workload(17, vocab);
  auto backend = [&](int32_t rows, bool fuse, bool programmatic) {
    CudaBackendOptions options;
    options.dtype = dtype;
    options.skinny_gemm_max_rows = rows;
    options.fuse_weights = fuse;
    options.programmatic_launch = programmatic;
    auto be = std::make_unique<CudaBackend>(options);
    if (rows == 0) be->set_decode_row_kernels(false);
    return be;
  };
  RunResult ref =
      run_engine(model, weights, backend(0, false, false), w, true, 60, 512, RunMode{false, true});
  const struct {
    const char* name;
    int32_t rows;
    bool programmatic;
  } variants[] = {{"skinny <= 32", 32, false}, {"skinny <= 8 + pdl", 8, true}};
  for (const auto& v : variants) {
    RunResult got = run_engine(model, weights, backend(v.rows, true, v.programmatic), w, true, 60,
                               512, RunMode{false, true});
    EXPECT_GT(got.graph_steps, got.steps / 2) << label << " " << v.name;
    const int ties = compare_greedy(got, ref, label + " " + v.name + " vs cublas");
    const Agreement a = agreement(got, ref);
    EXPECT_LT(a.worst, kLogitBound) << label << " " << v.name;
    std::printf(
        "[gpu-decode-kernels] %s, %s: %zu of %zu requests identical (%d diverged at ties), worst "
        "relative logit difference %.2e vs the cuBLASLt step\n",
        label.c_str(), v.name, a.equal, ref.tokens.size(), ties, a.worst);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, GpuDecodeKernels,
                         ::testing::Combine(::testing::Values("llama2", "llama3", "qwen2", "qwen3"),
                                            ::testing::Values(DType::kBF16, DType::kF16)));
// Llama-2-7B's layer shapes (K of 4096 and 11008, 32 heads): bf16 only, for time.
INSTANTIATE_TEST_SUITE_P(Llama2Layers, GpuDecodeKernels,
                         ::testing::Combine(::testing::Values("llama2-7b-2layer"),
                                            ::testing::Values(DType::kBF16)));

}  // namespace
}  // namespace relayllm
