// Every op of the CUDA backend against the CPU reference on fresh random inputs.
// Inputs are rounded to the GPU's 16-bit format first, so both sides compute on
// the same numbers and the error left is the GPU's rounding alone. Outputs are
// poisoned with NaN before each run: an element the GPU forgets fails the check.
#include "relayllm/backend/cuda/cuda_backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>

#include "../common/relay_tree_plan.h"
#include "gpu_op_test_util.h"
#include "relayllm/backend/batch_plan_builder.h"
#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/common/half.h"

namespace relayllm {
namespace {

using testing::poisoned;
using testing::relative_error;
using testing::to_host;

// bf16 keeps 8 bits of mantissa: one rounding of each output is ~2e-3 relative.
constexpr double kBound = 1e-2;

struct Env {
  CpuBackend cpu{4};
  CudaBackend gpu;
  // The attention's other work-list modes: no split-KV; splits down to 16 tokens
  // (outputs with dozens of partials, merged by whichever unit writes the last).
  CudaBackend unsplit{CudaBackendOptions{.split_kv = false}};
  CudaBackend fine_split{
      CudaBackendOptions{.attention_items_per_sm = 64, .attention_min_split = 16}};
  std::mt19937_64 rng{12345};

  std::vector<float> random(size_t n, float scale = 1.0f) {
    return testing::random_bf16(rng, n, scale);
  }
  Tensor gpu_tensor(const std::vector<float>& v, std::vector<int64_t> shape) {
    return gpu.upload(v, std::move(shape), DType::kBF16);
  }
  Tensor cpu_tensor(const std::vector<float>& v, std::vector<int64_t> shape) {
    return cpu.upload(v, std::move(shape), DType::kF32);
  }
};

Env& env() {
  static Env* e = new Env();
  return *e;
}

TEST(CudaOps, RmsNormAndAddRmsNorm) {
  Env& e = env();
  for (int64_t n : {64, 4096, 5000}) {
    int64_t rows = 7;
    auto x = e.random(rows * n), w = e.random(n), d = e.random(rows * n);
    Tensor gx = e.gpu_tensor(x, {rows, n}), gw = e.gpu_tensor(w, {n}),
           gout = poisoned(e.gpu, {rows, n});
    Tensor cx = e.cpu_tensor(x, {rows, n}), cw = e.cpu_tensor(w, {n}),
           cout = e.cpu.empty({rows, n}, DType::kF32);
    e.gpu.rmsnorm(gx, gw, 1e-5f, gout);
    e.cpu.rmsnorm(cx, cw, 1e-5f, cout);
    EXPECT_LT(relative_error(to_host(gout, e.gpu), to_host(cout, e.cpu)), kBound)
        << "rmsnorm n=" << n;

    Tensor gd = e.gpu_tensor(d, {rows, n}), cd = e.cpu_tensor(d, {rows, n});
    Tensor gout2 = poisoned(e.gpu, {rows, n});
    e.gpu.add_rmsnorm(gx, gd, gw, 1e-5f, gout2);
    e.cpu.add_rmsnorm(cx, cd, cw, 1e-5f, cout);
    EXPECT_LT(relative_error(to_host(gx, e.gpu), to_host(cx, e.cpu)), kBound) << "residual n=" << n;
    EXPECT_LT(relative_error(to_host(gout2, e.gpu), to_host(cout, e.cpu)), kBound)
        << "add_rmsnorm n=" << n;
  }
}

TEST(CudaOps, LinearWithAndWithoutBias) {
  Env& e = env();
  struct Shape {
    int64_t t, n, k;
  };
  for (Shape s : {Shape{1, 256, 128}, Shape{37, 300, 200}, Shape{130, 512, 1024}}) {
    auto x = e.random(s.t * s.k), w = e.random(s.n * s.k, 0.05f), b = e.random(s.n);
    for (bool with_bias : {false, true}) {
      Tensor gb = e.gpu_tensor(b, {s.n}), cb = e.cpu_tensor(b, {s.n});
      Tensor gout = poisoned(e.gpu, {s.t, s.n}), cout = e.cpu.empty({s.t, s.n}, DType::kF32);
      e.gpu.linear(e.gpu_tensor(x, {s.t, s.k}), e.gpu_tensor(w, {s.n, s.k}),
                   with_bias ? &gb : nullptr, gout);
      e.cpu.linear(e.cpu_tensor(x, {s.t, s.k}), e.cpu_tensor(w, {s.n, s.k}),
                   with_bias ? &cb : nullptr, cout);
      EXPECT_LT(relative_error(to_host(gout, e.gpu), to_host(cout, e.cpu)), kBound)
          << "linear t=" << s.t << " n=" << s.n << " k=" << s.k << " bias=" << with_bias;
    }
  }
}

TEST(CudaOps, EmbeddingRopeSiluWriteKvGather) {
  Env& e = env();
  const int64_t rows = 9, vocab = 50, hidden = 96, hq = 4, hk = 2, d = 64, max_pos = 300;
  BatchPlan plan;
  std::uniform_int_distribution<int> id(0, int(vocab) - 1), pos(0, int(max_pos) - 1);
  for (int64_t r = 0; r < rows; ++r) {
    plan.token_ids.push_back(id(e.rng));
    plan.positions.push_back(pos(e.rng));
    plan.slot_mapping.push_back(int64_t(r * 3 + 1));
  }
  plan.logit_rows = {8, 2, 5};
  e.gpu.begin_step(plan);
  e.cpu.begin_step(plan);

  auto table = e.random(vocab * hidden);
  Tensor gemb = poisoned(e.gpu, {rows, hidden}), cemb = e.cpu.empty({rows, hidden}, DType::kF32);
  e.gpu.embedding(e.gpu_tensor(table, {vocab, hidden}), plan, gemb);
  e.cpu.embedding(e.cpu_tensor(table, {vocab, hidden}), plan, cemb);
  EXPECT_EQ(relative_error(to_host(gemb, e.gpu), to_host(cemb, e.cpu)), 0.0);

  std::vector<float> cs(size_t(max_pos * d));
  for (int64_t p = 0; p < max_pos; ++p)
    for (int64_t i = 0; i < d / 2; ++i) {
      double a = p * std::pow(10000.0, -2.0 * i / d);
      cs[p * d + i] = float(std::cos(a));
      cs[p * d + d / 2 + i] = float(std::sin(a));
    }
  auto q = e.random(rows * hq * d), k = e.random(rows * hk * d);
  Tensor gq = e.gpu_tensor(q, {rows, hq, d}), gk = e.gpu_tensor(k, {rows, hk, d});
  Tensor cq = e.cpu_tensor(q, {rows, hq, d}), ck = e.cpu_tensor(k, {rows, hk, d});
  e.gpu.rope(gq, gk, e.gpu.upload(cs, {max_pos, d}, DType::kF32), plan);
  e.cpu.rope(cq, ck, e.cpu_tensor(cs, {max_pos, d}), plan);
  EXPECT_LT(relative_error(to_host(gq, e.gpu), to_host(cq, e.cpu)), kBound);
  EXPECT_LT(relative_error(to_host(gk, e.gpu), to_host(ck, e.cpu)), kBound);

  auto g = e.random(rows * 200), u = e.random(rows * 200);
  Tensor gs = poisoned(e.gpu, {rows, 200}), csil = e.cpu.empty({rows, 200}, DType::kF32);
  e.gpu.silu_mul(e.gpu_tensor(g, {rows, 200}), e.gpu_tensor(u, {rows, 200}), gs);
  e.cpu.silu_mul(e.cpu_tensor(g, {rows, 200}), e.cpu_tensor(u, {rows, 200}), csil);
  EXPECT_LT(relative_error(to_host(gs, e.gpu), to_host(csil, e.cpu)), kBound);

  auto pool = e.random(40 * hk * d);
  KvLayer gkv{e.gpu_tensor(pool, {10, 4, hk, d}), e.gpu_tensor(pool, {10, 4, hk, d})};
  KvLayer ckv{e.cpu_tensor(pool, {10, 4, hk, d}), e.cpu_tensor(pool, {10, 4, hk, d})};
  auto v = e.random(rows * hk * d);
  e.gpu.write_kv(e.gpu_tensor(k, {rows, hk, d}), e.gpu_tensor(v, {rows, hk, d}), gkv, plan);
  e.cpu.write_kv(e.cpu_tensor(k, {rows, hk, d}), e.cpu_tensor(v, {rows, hk, d}), ckv, plan);
  EXPECT_EQ(relative_error(to_host(gkv.k, e.gpu), to_host(ckv.k, e.cpu)), 0.0);
  EXPECT_EQ(relative_error(to_host(gkv.v, e.gpu), to_host(ckv.v, e.cpu)), 0.0);

  Tensor gsel = poisoned(e.gpu, {3, hidden}), csel = e.cpu.empty({3, hidden}, DType::kF32);
  e.gpu.gather_logit_rows(gemb, plan, gsel);
  e.cpu.gather_logit_rows(cemb, plan, csel);
  EXPECT_EQ(relative_error(to_host(gsel, e.gpu), to_host(csel, e.cpu)), 0.0);
}

// A random step: `own` gives each sequence's (query_len, context_len); sequences
// with group >= 0 attach to that prefix. Block tables are random pool blocks.
struct AttentionCase {
  int32_t hq, hk, d, block_size;
  std::vector<std::pair<int32_t, int32_t>> own;
  std::vector<int32_t> prefix_lens;
  std::vector<int32_t> group_of;  // per sequence, -1 for none
};

BatchPlan make_plan(const AttentionCase& c, std::mt19937_64& rng, int32_t* num_blocks) {
  int32_t total_blocks = 0;
  auto blocks_for = [&](int32_t n) { return (n + c.block_size - 1) / c.block_size; };
  for (auto [ql, ctx] : c.own) total_blocks += blocks_for(ctx);
  for (int32_t p : c.prefix_lens) total_blocks += blocks_for(p);
  total_blocks += 3;
  std::vector<int32_t> perm(static_cast<size_t>(total_blocks), 0);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  size_t next = 0;
  auto take_blocks = [&](int32_t tokens) {
    std::vector<int32_t> table(perm.begin() + long(next),
                               perm.begin() + long(next) + blocks_for(tokens));
    next += table.size();
    return table;
  };
  BatchPlanBuilder builder(c.block_size);
  for (size_t g = 0; g < c.prefix_lens.size(); ++g)
    builder.prefix_group(int64_t(g), c.prefix_lens[g], take_blocks(c.prefix_lens[g]));
  for (size_t s = 0; s < c.own.size(); ++s) {
    const auto [query_len, context_len] = c.own[s];
    const std::vector<int32_t> tokens(size_t(query_len), 0);
    builder.add_sequence({tokens, context_len - query_len, take_blocks(context_len),
                          c.group_of.empty() ? -1 : c.group_of[s]});
  }
  *num_blocks = total_blocks;
  return builder.take();
}

// The CUDA attention on `plan` against the CPU reference on the same plan and KV.
void check_plan(const BatchPlan& plan, int32_t num_blocks, const AttentionCase& c,
                const char* label) {
  Env& e = env();
  const int64_t rows = plan.num_rows();
  std::vector<int64_t> kv_shape = {num_blocks, c.block_size, c.hk, c.d};
  auto k = e.random(size_t(num_blocks) * c.block_size * c.hk * c.d);
  auto v = e.random(k.size());
  auto q = e.random(size_t(rows) * c.hq * c.d);
  AttentionShape shape{c.hq, c.hk, c.d, float(1.0 / std::sqrt(double(c.d)))};
  KvLayer ckv{e.cpu_tensor(k, kv_shape), e.cpu_tensor(v, kv_shape)};
  Tensor cout = e.cpu.empty({rows, c.hq, c.d}, DType::kF32);
  e.cpu.attention(e.cpu_tensor(q, {rows, c.hq, c.d}), ckv, shape, plan, cout);
  auto ref = to_host(cout, e.cpu);
  struct Mode {
    CudaBackend& be;
    const char* name;
  };
  for (const Mode& mode :
       {Mode{e.gpu, "split"}, Mode{e.unsplit, "unsplit"}, Mode{e.fine_split, "fine-split"}}) {
    CudaBackend& be = mode.be;
    KvLayer kv{be.upload(k, kv_shape, DType::kBF16), be.upload(v, kv_shape, DType::kBF16)};
    Tensor qq = be.upload(q, {rows, c.hq, c.d}, DType::kBF16);
    std::vector<float> nan(size_t(rows) * c.hq * c.d, std::numeric_limits<float>::quiet_NaN());
    be.begin_step(plan);
    // Twice, poisoned before each: the second call finds the claim cursor and the
    // outputs' arrival counts as the first left them (zero).
    for (int call = 0; call < 2; ++call) {
      Tensor out = be.upload(nan, {rows, c.hq, c.d}, DType::kBF16);
      be.attention(qq, kv, shape, plan, out);
      double err = relative_error(to_host(out, be), ref);
      EXPECT_LT(err, kBound) << label << " " << mode.name << " call " << call;
      if (call == 0)
        std::printf("  %-34s %-11s rows=%-5lld rel_err=%.2e\n", label, mode.name, (long long)rows,
                    err);
    }
  }
}

void check_attention(const AttentionCase& c, const char* label) {
  int32_t num_blocks = 0;
  BatchPlan plan = make_plan(c, env().rng, &num_blocks);
  check_plan(plan, num_blocks, c, label);
}

TEST(CudaAttention, DecodeOwnOnly) {
  for (int32_t d : {64, 128})
    for (auto [hq, hk] : {std::pair{8, 8}, std::pair{8, 2}, std::pair{16, 2}}) {
      AttentionCase c{hq, hk, d, 16, {{1, 1}, {1, 17}, {1, 1000}, {1, 63}, {1, 3001}}, {}, {}};
      check_attention(c, "decode");
    }
}

TEST(CudaAttention, PrefillCausal) {
  for (int32_t d : {16, 64, 128})
    for (auto [hq, hk] : {std::pair{4, 4}, std::pair{8, 2}, std::pair{32, 4}}) {
      AttentionCase c{hq, hk, d, 16, {{37, 37}, {5, 200}, {130, 300}, {1, 9}}, {}, {}};
      check_attention(c, "prefill");
    }
}

TEST(CudaAttention, RelayPrefixGroupsMixed) {
  for (int32_t d : {64, 128})
    for (auto [hq, hk] : {std::pair{8, 8}, std::pair{8, 2}, std::pair{32, 4}}) {
      AttentionCase c{hq,
                      hk,
                      d,
                      16,
                      {{1, 5}, {3, 40}, {1, 1}, {20, 20}, {1, 77}, {1, 2}, {7, 130}},
                      {37, 700, 2050},
                      {0, 1, 2, -1, 1, 1, 0}};
      check_attention(c, "relay mixed");
    }
}

TEST(CudaAttention, OneRequestAnd256Requests) {
  AttentionCase one{32, 32, 128, 16, {{1, 300}}, {2048}, {0}};
  check_attention(one, "relay batch 1");
  AttentionCase many{32, 8, 128, 16, {}, {513, 100}, {}};
  std::mt19937_64 rng(3);
  for (int i = 0; i < 256; ++i) {
    many.own.push_back({1, int32_t(1 + rng() % 200)});
    many.group_of.push_back(i % 5 == 0 ? -1 : int32_t(i % 2));
  }
  check_attention(many, "relay batch 256");
  AttentionCase odd_block{8, 2, 64, 5, {{3, 33}, {1, 101}}, {29}, {0, 0}};
  check_attention(odd_block, "block size 5");
}

TEST(CudaAttention, PrefixGroupsOfOneToFourRowBlocks) {
  // Prefix items of 16, 32, 48 and 64 query slots (GQA 8: 2, 4, 6 and 8 decode rows),
  // each a unit of its own in which one to four warps hold rows (the others only
  // load), on prefixes that are not multiples of the stage; and a long single-slot
  // range, which runs in units of its own too.
  for (int32_t d : {64, 128}) {
    AttentionCase c{16, 2, d, 16, {}, {1000, 77, 2049, 130}, {}};
    const int32_t rows_of_group[] = {2, 4, 6, 8};
    std::mt19937_64 rng(11);
    for (int32_t grp = 0; grp < 4; ++grp)
      for (int32_t r = 0; r < rows_of_group[grp]; ++r) {
        c.own.push_back({1, int32_t(1 + rng() % 90)});
        c.group_of.push_back(grp);
      }
    check_attention(c, "relay, 1-4 row blocks");
  }
  AttentionCase alone{8, 8, 128, 16, {{1, 5001}, {1, 3}}, {}, {}};
  check_attention(alone, "long context alone");
}

TEST(CudaAttention, JoinedPrefixesAndMhaDecode) {
  // A prefix with one sequence in the step is read through that sequence's joined
  // range (prefix table, then own table; the prefix's last block part-filled).
  AttentionCase joined_odd{8, 2, 64, 5, {{3, 33}}, {29}, {0}};
  check_attention(joined_odd, "joined, block size 5");
  AttentionCase joined_rows{32, 4, 128, 16, {{20, 50}, {1, 10}, {1, 3000}}, {300, 64}, {0, -1, 1}};
  check_attention(joined_rows, "joined, prefill rows");
  // MHA decode rows on two prefixes, and rows without one.
  AttentionCase mha{32, 32, 128, 16, {}, {1500, 37}, {}};
  std::mt19937_64 rng(5);
  for (int i = 0; i < 96; ++i) {
    mha.own.push_back({1, int32_t(1 + rng() % 300)});
    mha.group_of.push_back(i % 7 == 0 ? -1 : int32_t(i % 3 == 0));
  }
  check_attention(mha, "relay, MHA decode");
}

// Nested relay groups (automatic levels, inside a registered prefix or alone): random
// trees of depth 1-3 with sequences at every level, prefill chunks whose shared run
// ends at any block of their prompt, a registered prefix with one request (joined),
// and rows without a group; head_dim 64 and 128, MHA and GQA; lengths on block
// boundaries or not; block sizes 16 and 5. The CPU reference takes any depth (and is
// held to relay off by the CPU tests).
TEST(CudaAttention, NestedGroupsOfRandomTrees) {
  int32_t deepest = 0;
  uint64_t seed = 100;
  for (int32_t d : {64, 128})
    for (auto [hq, hk] : {std::pair{8, 8}, std::pair{32, 4}, std::pair{16, 2}})
      for (int32_t depth = 1; depth <= 3; ++depth)
        for (bool registered : {false, true}) {
          testing::TreeStepOptions o;
          o.depth = depth;
          o.registered_root = registered;
          o.aligned = seed % 3 == 0;
          o.block_size = seed % 5 == 2 ? 5 : 16;
          const testing::TreeStep step = testing::random_tree_step(seed++, o);
          deepest = std::max(deepest, step.depth);
          AttentionCase c{hq, hk, d, o.block_size, {}, {}, {}};
          const std::string label = "tree d" + std::to_string(depth) + (registered ? " reg" : "") +
                                    " bs" + std::to_string(o.block_size);
          check_plan(step.plan, step.num_blocks, c, label.c_str());
        }
  EXPECT_EQ(deepest, 3);
}

TEST(CudaAttention, NestedGroupsAtScale) {
  // The benchmark's shape, smaller: a long system level over documents over 64
  // decode rows (level items of 64 slots, split), and a deep tree of long chunks.
  testing::TreeStepOptions wide;
  wide.depth = 2;
  wide.max_level_blocks = 96;
  wide.max_context = 200;
  wide.loose = 8;
  const testing::TreeStep step = testing::random_tree_step(7, wide);
  check_plan(step.plan, step.num_blocks, AttentionCase{32, 32, 128, 16, {}, {}, {}},
             "tree, long levels, MHA");
  check_plan(step.plan, step.num_blocks, AttentionCase{32, 8, 128, 16, {}, {}, {}},
             "tree, long levels, GQA 4");
  testing::TreeStepOptions chunks;
  chunks.depth = 3;
  chunks.registered_root = true;
  chunks.aligned = false;
  chunks.max_chunk = 130;
  const testing::TreeStep deep = testing::random_tree_step(8, chunks);
  check_plan(deep.plan, deep.num_blocks, AttentionCase{16, 2, 64, 16, {}, {}, {}},
             "tree, long chunks, GQA 8");
}

}  // namespace
}  // namespace relayllm
