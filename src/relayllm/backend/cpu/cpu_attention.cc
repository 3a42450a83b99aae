// Paged attention with relay groups on the CPU, in the same three stages the GPU
// kernels use: (1) per group, every query row of the group against the group's KV
// (no mask), giving (o_P, lse_P); (2) per row, the sequence's own KV (causal),
// giving (o_U, lse_U); (3) o = w*o_P + (1-w)*o_U, w = sigmoid(lse_P - lse_U). With
// nested groups a row has one (o, lse) per level and (3) merges all of them by
// log-sum-exp weights. This is the reference for multi-level relay.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/common/error.h"

namespace relayllm {
namespace {

// One KV head of a paged pool, K and V rows of `Elem` (float, or uint16_t for fp16).
template <typename Elem>
struct PagedKv {
  const Elem* k;
  const Elem* v;
  const int32_t* block_table;
  int32_t block_size;
  int64_t token_stride;  // num_kv_heads * head_dim
  int64_t head_offset;   // kv_head * head_dim

  const Elem* key(int32_t token) const { return k + offset(token); }
  const Elem* value(int32_t token) const { return v + offset(token); }
  int64_t offset(int32_t token) const {
    int64_t slot = int64_t(block_table[token / block_size]) * block_size + token % block_size;
    return slot * token_stride + head_offset;
  }
};

// q . k with 8 independent partial sums: the compiler vectorises them without having to
// reassociate one long sum (which it may not do for floats).
float dot(const float* q, const float* k, int32_t n) {
  float lanes[8] = {};
  int32_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) lanes[l] += q[i + l] * k[i + l];
  float sum = 0;
  for (; i < n; ++i) sum += q[i] * k[i];
  for (int l = 0; l < 8; ++l) sum += lanes[l];
  return sum;
}

// The two row operations attention needs, per KV element type. fp32 rows: inline loops
// (the reference path). fp16 rows: the kernel table's, F16C/AVX-512 conversions when the
// CPU has them (chosen by CPUID with the rest of the table), fp32 products and sums.
struct F32Rows {
  float dot(const float* q, const float* k, int32_t n) const { return relayllm::dot(q, k, n); }
  void axpy(float p, const float* v, float* o, int32_t n) const {
    for (int32_t d = 0; d < n; ++d) o[d] += p * v[d];
  }
};
struct F16Rows {
  const cpu_quant::QuantKernels* kernels;
  float dot(const float* q, const uint16_t* k, int32_t n) const {
    return kernels->half_dot[int(WeightFormat::kF16)](n, k, q);
  }
  void axpy(float p, const uint16_t* v, float* o, int32_t n) const {
    kernels->f16_axpy(n, p, v, o);
  }
};

// Softmax attention of one query over tokens [0, n), fp32 accumulation. Keys are taken a
// chunk at a time: the chunk's scores first, then one max and one rescale of o per chunk
// (not per token), then the values (o += p * v vectorises). Writes o (head_dim) and
// returns the natural-log partition lse.
template <typename Elem, typename Rows>
float attend(const float* q, const PagedKv<Elem>& kv, int32_t n, int32_t head_dim, float scale,
             const Rows& rows, float* o) {
  constexpr int32_t kChunk = 32;
  for (int32_t d = 0; d < head_dim; ++d) o[d] = 0;
  if (n == 0) return -std::numeric_limits<float>::infinity();
  float running_max = -std::numeric_limits<float>::infinity();
  float denominator = 0;
  float s[kChunk];
  for (int32_t t0 = 0; t0 < n; t0 += kChunk) {
    const int32_t c = std::min(kChunk, n - t0);
    float chunk_max = -std::numeric_limits<float>::infinity();
    for (int32_t i = 0; i < c; ++i) {
      s[i] = rows.dot(q, kv.key(t0 + i), head_dim) * scale;
      chunk_max = std::max(chunk_max, s[i]);
    }
    const float new_max = std::max(running_max, chunk_max);
    const float rescale = std::exp(running_max - new_max);  // 0 on the first chunk
    denominator *= rescale;
    for (int32_t d = 0; d < head_dim; ++d) o[d] *= rescale;
    for (int32_t i = 0; i < c; ++i) {
      const float p = std::exp(s[i] - new_max);
      denominator += p;
      rows.axpy(p, kv.value(t0 + i), o, head_dim);
    }
    running_max = new_max;
  }
  for (int32_t d = 0; d < head_dim; ++d) o[d] /= denominator;
  return running_max + std::log(denominator);
}

}  // namespace

void CpuBackend::attention(const Tensor& q, const KvLayer& kv, const AttentionShape& shape,
                           const BatchPlan& plan, Tensor& out) {
  RELAYLLM_CHECK(
      kv.k.dtype == kv.v.dtype && (kv.k.dtype == DType::kF32 || kv.k.dtype == DType::kF16),
      "cpu attention: KV cache of {} (expected float32 or float16)", dtype_name(kv.k.dtype));
  if (kv.k.dtype == DType::kF16)
    return attention_rows<uint16_t>(q, kv, shape, plan, out, F16Rows{kernels_});
  attention_rows<float>(q, kv, shape, plan, out, F32Rows{});
}

template <typename Elem, typename Rows>
void CpuBackend::attention_rows(const Tensor& q, const KvLayer& kv, const AttentionShape& shape,
                                const BatchPlan& plan, Tensor& out, const Rows& kv_rows) {
  const int32_t hq = shape.num_heads, hk = shape.num_kv_heads, d = shape.head_dim;
  const int32_t group_size = hq / hk;
  const int32_t rows = plan.num_rows();
  const float* qd = q.data<float>();
  float* od = out.data<float>();

  auto paged = [&](int32_t table_start, int32_t kv_head) {
    return PagedKv<Elem>{
        kv.k.data<Elem>(), kv.v.data<Elem>(), plan.block_tables.data() + table_start,
        plan.block_size,   int64_t(hk) * d,   int64_t(kv_head) * d};
  };

  // Stage 1: one item per (group, row) of every group; a row of a nested group is in
  // each level's list. row_items[row] lists the row's items (CSR by row).
  struct Item {
    int32_t group;
    int32_t row;
  };
  std::vector<Item> prefix_items;
  std::vector<int32_t> items_per_row(size_t(rows) + 1, 0);
  for (const auto& g : plan.prefix_groups)
    for (int32_t row : g.query_rows) ++items_per_row[size_t(row) + 1];
  for (int32_t r = 0; r < rows; ++r) items_per_row[size_t(r) + 1] += items_per_row[size_t(r)];
  std::vector<int32_t> row_items(static_cast<size_t>(items_per_row[size_t(rows)]));
  {
    std::vector<int32_t> fill(items_per_row.begin(), items_per_row.end() - 1);
    for (int32_t g = 0; g < int32_t(plan.prefix_groups.size()); ++g)
      for (int32_t row : plan.prefix_groups[g].query_rows) {
        row_items[size_t(fill[size_t(row)]++)] = int32_t(prefix_items.size());
        prefix_items.push_back({g, row});
      }
  }
  std::vector<float> prefix_o(prefix_items.size() * hq * d);
  std::vector<float> prefix_lse(prefix_items.size() * hq);
  pool_.parallel_for(prefix_items.size() * hq, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) {
      size_t item = i / hq;
      int32_t h = int32_t(i % hq);
      const auto& group = plan.prefix_groups[prefix_items[item].group];
      int32_t row = prefix_items[item].row;
      prefix_lse[i] =
          attend(qd + (int64_t(row) * hq + h) * d, paged(group.block_table_start, h / group_size),
                 group.prefix_len, d, shape.scale, kv_rows, prefix_o.data() + i * d);
    }
  });

  // Stage 2 and 3: own part per (row, head), merged with the prefix part.
  std::vector<int32_t> row_sequence(rows, -1);
  for (int32_t s = 0; s < int32_t(plan.sequences.size()); ++s)
    for (int32_t r = 0; r < plan.sequences[s].query_len; ++r)
      row_sequence[plan.sequences[s].query_start + r] = s;
  pool_.parallel_for(size_t(rows) * hq, [&](size_t b, size_t e) {
    std::vector<float> own(d);
    for (size_t i = b; i < e; ++i) {
      int32_t row = int32_t(i / hq), h = int32_t(i % hq);
      const PlannedSequence& seq = plan.sequences[row_sequence[row]];
      // Own tokens visible to this row: everything up to and including itself.
      int32_t visible = seq.context_len - seq.query_len + (row - seq.query_start) + 1;
      float* o = od + (int64_t(row) * hq + h) * d;
      float lse_own =
          attend(qd + (int64_t(row) * hq + h) * d, paged(seq.block_table_start, h / group_size),
                 visible, d, shape.scale, kv_rows, own.data());
      const int32_t first_item = items_per_row[size_t(row)];
      const int32_t last_item = items_per_row[size_t(row) + 1];
      if (first_item == last_item) {
        for (int32_t j = 0; j < d; ++j) o[j] = own[j];
        continue;
      }
      if (last_item - first_item == 1) {
        size_t p = size_t(row_items[size_t(first_item)]) * hq + h;
        float w = 1.0f / (1.0f + std::exp(lse_own - prefix_lse[p]));
        const float* op = prefix_o.data() + p * d;
        for (int32_t j = 0; j < d; ++j) o[j] = w * op[j] + (1.0f - w) * own[j];
        continue;
      }
      // Several levels: weights exp(lse_k - max) over every part, normalized once.
      float top = lse_own;
      for (int32_t k = first_item; k < last_item; ++k)
        top = std::max(top, prefix_lse[size_t(row_items[size_t(k)]) * hq + h]);
      float w_own = std::exp(lse_own - top), total = w_own;
      for (int32_t j = 0; j < d; ++j) o[j] = w_own * own[j];
      for (int32_t k = first_item; k < last_item; ++k) {
        size_t p = size_t(row_items[size_t(k)]) * hq + h;
        float w = std::exp(prefix_lse[p] - top);
        total += w;
        const float* op = prefix_o.data() + p * d;
        for (int32_t j = 0; j < d; ++j) o[j] += w * op[j];
      }
      for (int32_t j = 0; j < d; ++j) o[j] /= total;
    }
  });
}

}  // namespace relayllm
