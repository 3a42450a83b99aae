// The engine's own plans through the CUDA attention's work list, without a GPU: a
// backend that is the CPU backend in every op but attention, where it builds the
// CUDA work list of the step's plan and executes it on the host with the kernel's
// arithmetic (work_list_replay.h), and that takes nested relay groups as the CUDA
// backend does. On a 3-level prefix tree (system prompt, documents, sub-parts,
// questions; repeated prompts; prompts without the system prompt), automatic relay
// alone, inside a registered system prompt, and under a pool and budget that
// preempt, evict and chunk gives the tokens and logits of relay off on the plain CPU
// backend: the plans the engine forms (groups over shared blocks, runs ending inside
// prompts, prefill chunks beside decode rows) are plans the work list executes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "../common/work_list_replay.h"
#include "../unit/tiny_models.h"
#include "relayllm/backend/cpu/cpu_backend.h"

namespace relayllm {
namespace {

class WorkListBackend final : public Backend {
 public:
  std::string name() const override { return "cpu+work-list"; }
  DType compute_dtype() const override { return cpu_.compute_dtype(); }
  DType kv_dtype() const override { return cpu_.kv_dtype(); }
  Tensor empty(std::vector<int64_t> shape, DType dtype) override {
    return cpu_.empty(std::move(shape), dtype);
  }
  Tensor upload(std::span<const float> host, std::vector<int64_t> shape, DType dtype) override {
    return cpu_.upload(host, std::move(shape), dtype);
  }
  void download(const Tensor& tensor, std::span<float> host) override {
    cpu_.download(tensor, host);
  }
  int32_t max_relay_levels() const override { return 1 << 20; }  // as CudaBackend
  void begin_step(const BatchPlan& plan, const StepInfo& info) override {
    cpu_.begin_step(plan, info);
  }
  void embedding(const Tensor& table, const BatchPlan& plan, Tensor& out) override {
    cpu_.embedding(table, plan, out);
  }
  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    cpu_.rmsnorm(x, weight, eps, out);
  }
  void add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps,
                   Tensor& out) override {
    cpu_.add_rmsnorm(residual, x, weight, eps, out);
  }
  void linear(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor& out) override {
    cpu_.linear(x, weight, bias, out);
  }
  void rope(Tensor& q, Tensor& k, const Tensor& cos_sin, const BatchPlan& plan) override {
    cpu_.rope(q, k, cos_sin, plan);
  }
  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override {
    cpu_.silu_mul(gate, up, out);
  }
  void write_kv(const Tensor& k, const Tensor& v, KvLayer& kv, const BatchPlan& plan) override {
    cpu_.write_kv(k, v, kv, plan);
  }
  void gather_logit_rows(const Tensor& x, const BatchPlan& plan, Tensor& out) override {
    cpu_.gather_logit_rows(x, plan, out);
  }
  void attention(const Tensor& q, const KvLayer& kv, const AttentionShape& shape,
                 const BatchPlan& plan, Tensor& out) override {
    testing::ReplayInputs in{shape.num_heads,
                             shape.num_kv_heads,
                             shape.head_dim,
                             int32_t(kv.k.dim(1)),
                             int32_t(kv.k.dim(0)),
                             int32_t(q.numel() / (int64_t(shape.num_heads) * shape.head_dim)),
                             {},
                             {},
                             {}};
    for (auto [t, v] : {std::pair{&q, &in.q}, std::pair{&kv.k, &in.k}, std::pair{&kv.v, &in.v}}) {
      v->resize(size_t(t->numel()));
      cpu_.download(*t, *v);
    }
    EXPECT_NEAR(double(shape.scale), 1.0 / std::sqrt(double(shape.head_dim)), 1e-6);
    cuda::AttentionWorkOptions options;
    options.num_heads = shape.num_heads;
    options.num_kv_heads = shape.num_kv_heads;
    options.num_sms = 4;  // a small GPU: long ranges split, levels in several pieces
    options.min_split = 16;
    options.num_rows = in.rows;
    const std::vector<double> got =
        testing::replay_work(plan, cuda::build_attention_work(plan, options), in);
    ASSERT_EQ(out.dtype, DType::kF32);
    ASSERT_EQ(size_t(out.numel()), got.size());
    float* dst = static_cast<float*>(out.storage.get());
    for (size_t i = 0; i < got.size(); ++i) dst[i] = float(got[i]);
  }
  void all_reduce_sum(Tensor& x, Communicator& comm) override { cpu_.all_reduce_sum(x, comm); }

 private:
  CpuBackend cpu_{CpuBackendOptions{.num_threads = 2}};
};

std::vector<std::vector<int32_t>> tree_prompts(uint64_t seed, std::vector<int32_t>* system) {
  std::mt19937_64 rng(seed);
  auto tokens = [&](int lo, int hi) {
    std::vector<int32_t> t(size_t(lo + int(rng() % uint64_t(hi - lo + 1))));
    for (auto& x : t) x = int32_t(rng() % 256);
    return t;
  };
  auto cat = [](std::vector<int32_t> a, const std::vector<int32_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  *system = tokens(9, 30);
  std::vector<std::vector<int32_t>> prompts;
  for (int doc = 0; doc < 2; ++doc) {
    const auto with_doc = cat(*system, tokens(9, 24));
    for (int part = 0; part < 2; ++part) {
      const auto with_part = cat(with_doc, tokens(9, 20));
      for (int q = 0; q < 2 + int(rng() % 2); ++q) {
        prompts.push_back(cat(with_part, tokens(1, 8)));
        if (rng() % 4 == 0) prompts.push_back(prompts.back());
      }
    }
    prompts.push_back(cat(with_doc, tokens(1, 6)));
  }
  prompts.push_back(tokens(3, 20));
  return prompts;
}

struct RunResult {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<std::vector<float>>> logits;
  EngineStats stats;
  SchedulerStats scheduler;
};

RunResult run(const std::string& arch, const std::vector<int32_t>& system,
              const std::vector<std::vector<int32_t>>& prompts, bool work_list, bool relay,
              bool register_system, int32_t blocks, int32_t budget) {
  EngineConfig config;
  config.block_size = 4;
  config.num_kv_blocks = blocks;
  config.scheduler.max_num_batched_tokens = budget;
  config.scheduler.enable_prefix_caching = relay;
  config.enable_relay_attention = relay;
  config.capture_logits = true;
  Tokenizer tokenizer = Tokenizer::make_byte_tokenizer();
  const ModelConfig model = testing::tiny_config(arch, tokenizer.vocab_size());
  std::unique_ptr<Backend> backend;
  if (work_list)
    backend = std::make_unique<WorkListBackend>();
  else
    backend = std::make_unique<CpuBackend>(2);
  Engine engine(model, make_dummy_weights(model, 7), std::move(tokenizer), std::move(backend),
                config);
  if (register_system) engine.register_prefix("system", system);
  SamplingParams params;
  params.temperature = 0;
  params.ignore_eos = true;
  std::vector<int64_t> ids;
  for (size_t i = 0; i < prompts.size(); ++i) {
    params.max_tokens = 4 + int32_t(i % 5);
    ids.push_back(engine.add_request(prompts[i], params));
    if (i % 3 == 2) engine.step();  // arrivals over several steps
  }
  for (int guard = 0; engine.has_unfinished() && guard < 10000; ++guard) engine.step();
  EXPECT_FALSE(engine.has_unfinished());
  RunResult r;
  for (int64_t id : ids) {
    r.tokens.push_back(engine.find(id)->output_ids);
    r.logits.push_back(engine.find(id)->captured_logits);
  }
  r.stats = engine.stats();
  r.scheduler = engine.scheduler_stats();
  return r;
}

class WorkListEngine : public ::testing::TestWithParam<std::string> {};

TEST_P(WorkListEngine, AutoRelayThroughTheWorkListEqualsRelayOff) {
  const std::string arch = GetParam();
  std::vector<int32_t> system;
  const auto prompts = tree_prompts(31 + arch.size(), &system);
  const RunResult off = run(arch, system, prompts, false, false, false, 4096, 4096);
  struct Case {
    const char* name;
    bool register_system;
    int32_t blocks, budget;
  };
  int64_t preemptions = 0, chunked = 0;
  for (const Case& c :
       {Case{"auto", false, 4096, 4096}, Case{"registered system + auto", true, 4096, 4096},
        Case{"auto under pressure", false, 28, 16}}) {
    const RunResult on =
        run(arch, system, prompts, true, true, c.register_system, c.blocks, c.budget);
    const std::string what = arch + " " + c.name;
    EXPECT_GT(on.stats.relay_auto_groups, 0) << what;
    if (c.blocks > 1000) EXPECT_GE(on.stats.max_relay_depth, 2) << what;
    std::printf("[work-list engine] %s: %lld automatic groups, depth %d, %lld preemptions\n",
                what.c_str(), (long long)on.stats.relay_auto_groups, on.stats.max_relay_depth,
                (long long)on.scheduler.num_preemptions);
    preemptions += on.scheduler.num_preemptions;
    chunked += on.scheduler.num_chunked_prefills;
    ASSERT_EQ(on.tokens.size(), off.tokens.size());
    for (size_t r = 0; r < off.tokens.size(); ++r) {
      EXPECT_EQ(on.tokens[r], off.tokens[r]) << what << ", request " << r;
      ASSERT_EQ(on.logits[r].size(), off.logits[r].size()) << what << ", request " << r;
      for (size_t s = 0; s < off.logits[r].size(); ++s) {
        double diff = 0, scale = 0;
        for (size_t i = 0; i < off.logits[r][s].size(); ++i) {
          diff = std::max(diff, double(std::fabs(on.logits[r][s][i] - off.logits[r][s][i])));
          scale = std::max(scale, double(std::fabs(off.logits[r][s][i])));
        }
        EXPECT_LT(diff / std::max(scale, 1e-6), 2e-5)
            << what << ", request " << r << ", step " << s;
      }
    }
  }
  EXPECT_GT(preemptions, 0) << arch;
  EXPECT_GT(chunked, 0) << arch;
}

INSTANTIATE_TEST_SUITE_P(AllArchitectures, WorkListEngine,
                         ::testing::ValuesIn(testing::tiny_architectures()));

}  // namespace
}  // namespace relayllm
