// The CUDA attention's arithmetic on the host: a work list (attention_work.h)
// executed item by item in double precision, as the kernel executes it: each slot's
// partial (o, lse) over [kv_begin, min(kv_end, visible)) of its range (a joined range
// read through the prefix's table first), written directly when its output has one
// part, else merged by lse with the output's other partials. Failures of the list's
// own consistency (a partial written twice, or never) are gtest failures.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "relayllm/backend/batch_plan.h"
#include "relayllm/backend/cuda/attention_work.h"

namespace relayllm::testing {

struct ReplayInputs {
  int32_t hq, hk, d, bs, blocks, rows;
  std::vector<float> q, k, v;  // [rows, hq, d], [blocks, bs, hk, d] twice
};

// The kernel's arithmetic, on the host.
inline std::vector<double> replay_work(const BatchPlan& plan, const cuda::AttentionWork& work,
                                       const ReplayInputs& in) {
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

}  // namespace relayllm::testing
