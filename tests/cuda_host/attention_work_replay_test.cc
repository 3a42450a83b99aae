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
#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/backend/cuda/attention_work.h"

namespace relayllm {
namespace {

struct Inputs {
  int32_t hq, hk, d, bs, blocks, rows;
  std::vector<float> q, k, v;  // [rows, hq, d], [blocks, bs, hk, d] twice
};

// The kernel's arithmetic, on the host.
std::vector<double> replay(const BatchPlan& plan, const cuda::AttentionWork& work,
                           const Inputs& in) {
  const int32_t group = in.hq / in.hk;
  const double scale = 1.0 / std::sqrt(double(in.d));
  std::vector<double> out(size_t(in.rows) * in.hq * in.d, std::numeric_limits<double>::quiet_NaN());
  std::vector<double> part_o(size_t(work.num_partials) * in.d, 0.0);
  std::vector<double> part_lse(size_t(work.num_partials), -INFINITY);
  std::vector<int32_t> written(size_t(work.num_partials), 0);
  auto kv_at = [&](const std::vector<float>& kv, int32_t table, int32_t token, int32_t head) {
    const int32_t block = plan.block_tables[size_t(table + token / in.bs)];
    return &kv[((size_t(block) * in.bs + size_t(token % in.bs)) * in.hk + size_t(head)) * in.d];
  };
  for (const cuda::AttentionUnit& unit : work.units) {
    const int32_t count = unit.packed ? cuda::kPackItems : 1;
    for (int32_t i = 0; i < count; ++i) {
      const cuda::AttentionItem& item = unit.items[i];
      for (int32_t s = 0; s < item.slot_count; ++s) {
        const cuda::QuerySlot& slot = work.slots[size_t(item.slot_offset + s)];
        EXPECT_EQ((slot.row_head % in.hq) / group, item.kv_head);
        const float* q = &in.q[size_t(slot.row_head) * in.d];
        const int32_t end = std::min(item.kv_end, slot.visible);
        std::vector<double> scores;
        std::vector<const float*> values;
        for (int32_t t = item.kv_begin; t < end; ++t) {
          const bool prefix = t < item.prefix_len;
          const int32_t table = prefix ? item.prefix_table : item.table_start;
          const int32_t token = prefix ? t : t - item.prefix_len;
          const float* key = kv_at(in.k, table, token, item.kv_head);
          double dot = 0;
          for (int32_t j = 0; j < in.d; ++j) dot += double(q[j]) * key[j];
          scores.push_back(dot * scale);
          values.push_back(kv_at(in.v, table, token, item.kv_head));
        }
        double mx = -INFINITY, total = 0;
        for (double x : scores) mx = std::max(mx, x);
        std::vector<double> o(size_t(in.d), 0.0);
        for (size_t t = 0; t < scores.size(); ++t) {
          const double w = std::exp(scores[t] - mx);
          total += w;
          for (int32_t j = 0; j < in.d; ++j) o[size_t(j)] += w * values[t][j];
        }
        for (double& x : o) x = total > 0 ? x / total : 0.0;
        if (slot.parts == 1) {
          EXPECT_GT(total, 0) << "a single part without tokens";
          std::copy(o.begin(), o.end(), out.begin() + long(slot.row_head) * in.d);
          continue;
        }
        const int32_t p = slot.partial_base + item.split;
        if (p < 0 || p >= work.num_partials) {
          ADD_FAILURE() << "partial " << p << " outside the " << work.num_partials;
          continue;
        }
        EXPECT_EQ(written[size_t(p)]++, 0) << "partial " << p << " written twice";
        std::copy(o.begin(), o.end(), part_o.begin() + long(p) * in.d);
        part_lse[size_t(p)] = total > 0 ? mx + std::log(total) : -INFINITY;
      }
    }
  }
  for (const cuda::MergeOutput& m : work.merges) {
    double mx = -INFINITY, total = 0;
    for (int32_t p = m.first; p < m.first + m.parts; ++p) {
      EXPECT_EQ(written[size_t(p)], 1) << "partial " << p << " of output " << m.row_head;
      mx = std::max(mx, part_lse[size_t(p)]);
    }
    std::vector<double> o(size_t(in.d), 0.0);
    for (int32_t p = m.first; p < m.first + m.parts; ++p) {
      if (part_lse[size_t(p)] == -INFINITY) continue;
      const double w = std::exp(part_lse[size_t(p)] - mx);
      total += w;
      for (int32_t j = 0; j < in.d; ++j) o[size_t(j)] += w * part_o[size_t(p) * in.d + size_t(j)];
    }
    for (int32_t j = 0; j < in.d; ++j)
      out[size_t(m.row_head) * in.d + size_t(j)] = o[size_t(j)] / total;
  }
  return out;
}

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
    Inputs in{hq, hk, 16, o.block_size, step.num_blocks, step.plan.num_rows(), {}, {}, {}};
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
      const std::vector<double> got = replay(step.plan, work, in);
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
