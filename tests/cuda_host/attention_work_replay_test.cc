// The CUDA attention's work list replayed on the host against the CPU backend's
// attention: what the kernel computes, item by item (each slot's partial (o, lse)
// over [kv_begin, min(kv_end, visible)) of its range, a joined range read through
// the prefix's table first; the output written directly when it has one part, else
// the partials merged by lse at the end), in double precision, on random trees of
// nested relay groups. The structural checks of attention_work_test.cc say every
// token is covered once; this says the list's numbers (visible lengths, tables,
// partial indices, merges) give attention's output, without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../common/relay_tree_plan.h"
#include "../common/work_list_replay.h"
#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/backend/cuda/attention_work.h"

namespace relayllm {
namespace {

TEST(AttentionWorkReplay, NestedGroupsOfRandomTreesGiveAttention) {
  CpuBackend cpu(2);
  std::mt19937_64 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  int32_t deepest = 0;
  for (uint64_t seed = 0; seed < 24; ++seed) {
    testing::TreeStepOptions o;
    o.depth = 1 + int32_t(seed % 3);
    o.registered_root = seed % 2 == 1;
    o.aligned = seed % 4 == 0;
    o.block_size = seed % 5 == 4 ? 5 : 16;
    o.max_level_blocks = 6;
    o.max_context = 120;
    o.max_chunk = 24;
    const testing::TreeStep step = testing::random_tree_step(seed + 7, o);
    deepest = std::max(deepest, step.depth);
    const auto [hq, hk] = seed % 3 == 0 ? std::pair{4, 4} : std::pair{8, 2};
    testing::ReplayInputs in{hq, hk, 16, o.block_size, step.num_blocks, step.plan.num_rows(),
                             {}, {}, {}};
    for (auto* v : {&in.q, &in.k, &in.v}) {
      const size_t n =
          v == &in.q ? size_t(in.rows) * hq * in.d : size_t(in.blocks) * in.bs * hk * in.d;
      v->resize(n);
      for (float& x : *v) x = normal(rng);
    }
    const AttentionShape shape{hq, hk, in.d, float(1.0 / std::sqrt(double(in.d)))};
    const std::vector<int64_t> kv_shape = {in.blocks, in.bs, hk, in.d};
    KvLayer kv{cpu.upload(in.k, kv_shape, DType::kF32), cpu.upload(in.v, kv_shape, DType::kF32)};
    Tensor out = cpu.empty({in.rows, hq, in.d}, DType::kF32);
    cpu.attention(cpu.upload(in.q, {in.rows, hq, in.d}, DType::kF32), kv, shape, step.plan, out);
    std::vector<float> ref(size_t(out.numel()));
    cpu.download(out, ref);
    // The work list as the backend cuts it for a large GPU and for splits of 16
    // tokens (outputs with dozens of partials across levels).
    for (auto [sms, min_split] : {std::pair{132, 64}, std::pair{132, 16}, std::pair{4, 64}}) {
      cuda::AttentionWorkOptions options;
      options.num_heads = hq;
      options.num_kv_heads = hk;
      options.num_sms = sms;
      options.min_split = min_split;
      options.items_per_sm = min_split == 16 ? 64 : 8;
      const cuda::AttentionWork work = cuda::build_attention_work(step.plan, options);
      const std::vector<double> got = testing::replay_work(step.plan, work, in);
      double num = 0, den = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        num += (got[i] - ref[i]) * (got[i] - ref[i]);
        den += double(ref[i]) * ref[i];
      }
      EXPECT_LT(std::sqrt(num / den), 1e-5)
          << "seed " << seed << " depth " << o.depth << " sms " << sms << " split " << min_split;
    }
  }
  EXPECT_EQ(deepest, 3);
}

}  // namespace
}  // namespace relayllm
