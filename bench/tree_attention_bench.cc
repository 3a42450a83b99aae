// Decode attention over a 3-level prefix tree on the CUDA backend: one system
// prompt under every request, DOCS documents each under PER_DOC requests, and each
// request's own tokens (its question and what it generated), all in the physical
// blocks that prefix caching shares. One decode step's attention is timed four
// ways over the same KV, with the same kernel:
//
//   paged       each row reads its whole table (system, document, own), as with
//               prefix caching alone
//   registered  one level: each (system + document) a relay group of its requests,
//               as registered prefixes give (the system prompt read once per document)
//   tree        the tree by hand: the system prompt a group of every row, each
//               document a group nested in it, then the rows' own ranges
//   auto        the groups the engine forms by itself: plan_relay_groups over the
//               rows' block tables with the engine's cost model, as Engine::build_plan
//
// Per configuration one JSON line: per mode the time of one call (a graph of one call
// per layer, each layer over its own KV, replay time / layers: attention_timing.h),
// the KV and q/o bytes it must move and their share of the copy bandwidth measured
// in the same run, the error against paged, and the auto plan's groups and depth.
//
// Usage: tree_attention_bench [--shapes llama2-7b,llama3-8b] [--system 1024] [--docs 8]
//          [--per-doc 8] [--doc 2048] [--owns 101,164,228] [--plans-only]
// --plans-only needs no GPU: per mode the bytes, groups and the work list an H100 (132
// multiprocessors, two CTAs each) would run, from the host-side work-list builder.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "attention_timing.h"
#include "bench_main.h"
#include "decode_plans.h"
#include "relayllm/backend/batch_plan_builder.h"
#include "relayllm/backend/cuda/cuda_backend.h"
#include "relayllm/backend/relay_group_planner.h"
#include "relayllm/common/error.h"

namespace relayllm {
namespace {

using bench::kBlock;
using bench::kHeadDim;
using bench::Shape;
using bench::Timing;

constexpr int kMaxLayers = 16;
constexpr int64_t kLayerBudget = int64_t(16) << 30;

struct Args {
  std::vector<std::string> shapes{"llama2-7b", "llama3-8b"};
  int system = 1024, docs = 8, per_doc = 8, doc = 2048;
  std::vector<int> owns{101, 164, 228};  // question 100 + 1, 64, 128 generated tokens
  bool plans_only = false;
};

// The tree's block tables in one layer's window: [system][document d][own of row r].
struct Tree {
  int system_blocks, doc_blocks, own_blocks, rows;
  std::vector<std::vector<int32_t>> tables;  // per row: system, its document, own
  int doc_of(int row, int per_doc) const { return row / per_doc; }
};

Tree make_tree(const Args& a, int own) {
  RELAYLLM_CHECK(a.system % kBlock == 0 && a.doc % kBlock == 0,
                 "tree_attention_bench: --system {} and --doc {} must be multiples of {}", a.system,
                 a.doc, kBlock);
  Tree t{a.system / kBlock, a.doc / kBlock, (own + kBlock - 1) / kBlock, a.docs * a.per_doc, {}};
  for (int r = 0; r < t.rows; ++r) {
    std::vector<int32_t> table;
    for (int j = 0; j < t.system_blocks; ++j) table.push_back(j);
    const int doc_base = t.system_blocks + t.doc_of(r, a.per_doc) * t.doc_blocks;
    for (int j = 0; j < t.doc_blocks; ++j) table.push_back(doc_base + j);
    const int own_base = t.system_blocks + a.docs * t.doc_blocks + r * t.own_blocks;
    for (int j = 0; j < t.own_blocks; ++j) table.push_back(own_base + j);
    t.tables.push_back(std::move(table));
  }
  return t;
}

int64_t window_blocks(const Tree& t, const Args& a) {
  return t.system_blocks + int64_t(a.docs) * t.doc_blocks + int64_t(t.rows) * t.own_blocks;
}

enum class Mode { kPaged, kRegistered, kTree, kAuto };
const char* mode_name(Mode m) {
  switch (m) {
    case Mode::kPaged:
      return "paged";
    case Mode::kRegistered:
      return "registered";
    case Mode::kTree:
      return "tree";
    case Mode::kAuto:
      return "auto";
  }
  return "?";
}

struct Built {
  BatchPlan plan;
  int groups = 0, depth = 0;
};

Built build(Mode mode, const Tree& t, const Args& a, int own, const RelayCostModel& cost) {
  BatchPlanBuilder builder(kBlock);
  const int32_t token = 0;
  const int shared = a.system + a.doc;
  auto add_row = [&](int r, int32_t group, int skip_blocks) {
    const std::span<const int32_t> table(t.tables[size_t(r)]);
    const int context = shared + own - skip_blocks * kBlock;
    builder.add_sequence({std::span(&token, 1), context - 1, table.subspan(size_t(skip_blocks)),
                          group, skip_blocks * kBlock});
  };
  Built b;
  if (mode == Mode::kPaged) {
    for (int r = 0; r < t.rows; ++r) add_row(r, -1, 0);
  } else if (mode == Mode::kRegistered) {
    for (int r = 0; r < t.rows; ++r) {
      const std::span<const int32_t> table(t.tables[size_t(r)]);
      const int32_t g = builder.prefix_group(
          t.doc_of(r, a.per_doc), shared, table.subspan(0, size_t(t.system_blocks + t.doc_blocks)));
      add_row(r, g, t.system_blocks + t.doc_blocks);
    }
  } else if (mode == Mode::kTree) {
    const std::span<const int32_t> first(t.tables[0]);
    const int32_t sys = builder.nested_group(-1, first.subspan(0, size_t(t.system_blocks)));
    std::vector<int32_t> doc_group;
    for (int d = 0; d < a.docs; ++d) {
      const std::span<const int32_t> table(t.tables[size_t(d * a.per_doc)]);
      doc_group.push_back(
          builder.nested_group(sys, table.subspan(size_t(t.system_blocks), size_t(t.doc_blocks))));
    }
    for (int r = 0; r < t.rows; ++r)
      add_row(r, doc_group[size_t(t.doc_of(r, a.per_doc))], t.system_blocks + t.doc_blocks);
  } else {
    // As Engine::build_plan: a decode row's computed tokens are its context but the new one.
    std::vector<RelayCandidate> candidates(size_t(t.rows));
    for (int r = 0; r < t.rows; ++r) {
      RelayCandidate& c = candidates[size_t(r)];
      c.blocks = t.tables[size_t(r)];
      c.query_len = 1;
      c.groupable_blocks =
          std::min((shared + own - 1) / kBlock, int32_t(t.tables[size_t(r)].size()));
    }
    const RelayGroupPlan groups = plan_relay_groups(candidates, cost);
    std::vector<int32_t> plan_group(groups.groups.size(), -1);
    for (size_t g = 0; g < groups.groups.size(); ++g) {
      const RelayGroup& group = groups.groups[g];
      const int32_t parent = group.parent >= 0 ? plan_group[size_t(group.parent)] : -1;
      plan_group[g] =
          builder.nested_group(parent, candidates[size_t(group.members[0])].blocks.subspan(
                                           size_t(group.first_block), size_t(group.num_blocks)));
    }
    for (int r = 0; r < t.rows; ++r)
      add_row(r, groups.leaf[size_t(r)] >= 0 ? plan_group[size_t(groups.leaf[size_t(r)])] : -1,
              groups.own_first_block[size_t(r)]);
    b.groups = int(groups.groups.size());
  }
  b.depth = builder.max_depth();
  if (mode != Mode::kAuto) b.groups = int(builder.plan().prefix_groups.size());
  b.plan = builder.take();
  return b;
}

// KV tokens the plan's attention reads: each group's once, each row's own range.
int64_t kv_tokens_read(const BatchPlan& plan) {
  int64_t n = 0;
  for (const PlannedPrefixGroup& g : plan.prefix_groups) n += g.prefix_len;
  for (const PlannedSequence& s : plan.sequences) n += s.context_len;
  return n;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail("tree_attention_bench: {} needs a value", k);
      return argv[++i];
    };
    if (k == "--shapes") {
      a.shapes = split_list(value());
    } else if (k == "--system") {
      a.system = std::stoi(value());
    } else if (k == "--docs") {
      a.docs = std::stoi(value());
    } else if (k == "--per-doc") {
      a.per_doc = std::stoi(value());
    } else if (k == "--doc") {
      a.doc = std::stoi(value());
    } else if (k == "--owns") {
      a.owns.clear();
      for (const std::string& s : split_list(value())) a.owns.push_back(std::stoi(s));
    } else if (k == "--plans-only") {
      a.plans_only = true;
    } else {
      fail("tree_attention_bench: unknown argument '{}'", k);
    }
  }
  RELAYLLM_CHECK(a.docs > 0 && a.per_doc > 0 && !a.owns.empty(),
                 "tree_attention_bench: --docs, --per-doc and --owns must be positive");
  return a;
}

// The plans and their work lists on the host, as an H100 would cut them.
int plans_only(const Args& args) {
  for (const std::string& name : args.shapes) {
    const Shape s = bench::shape_named(name);
    const RelayCostModel cost = RelayCostModel::for_shape(kBlock, s.hq, s.hk, kHeadDim, 2);
    const double kv_token = 2.0 * s.hk * kHeadDim * 2, qo_per_row = 2.0 * s.hq * kHeadDim * 2;
    for (int own : args.owns) {
      const Tree tree = make_tree(args, own);
      std::printf("{\"kind\": \"tree_plans\", \"shape\": \"%s\", \"own\": %d, \"rows\": %d", s.name,
                  own, tree.rows);
      for (Mode mode : {Mode::kPaged, Mode::kRegistered, Mode::kTree, Mode::kAuto}) {
        const Built b = build(mode, tree, args, own, cost);
        cuda::AttentionWorkOptions options;
        options.num_heads = s.hq;
        options.num_kv_heads = s.hk;
        options.num_sms = 132;
        const cuda::AttentionWork work = cuda::build_attention_work(b.plan, options);
        const cuda::AttentionWorkSummary sum = cuda::summarize(work, 2 * 132, kHeadDim);
        const double bytes = kv_token * double(kv_tokens_read(b.plan)) + qo_per_row * tree.rows;
        std::printf(
            ", \"%s\": {\"mb\": %.2f, \"groups\": %d, \"depth\": %d, \"units\": %lld, "
            "\"makespan_stages\": %lld, \"partial_mb\": %.3f}",
            mode_name(mode), bytes / 1e6, b.groups, b.depth, (long long)sum.units,
            (long long)sum.makespan_stages, sum.partial_bytes / 1e6);
      }
      std::printf("}\n");
    }
  }
  return 0;
}

int run(const Args& args) {
  if (args.plans_only) return plans_only(args);
  CudaBackend gpu;
  cudaStream_t stream = static_cast<cudaStream_t>(gpu.stream());
  const std::string device = bench::device_name();
  const double bw = bench::print_copy_line(gpu, "tree_attention_bench", device);
  std::mt19937_64 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int max_own = *std::max_element(args.owns.begin(), args.owns.end());

  for (const std::string& name : args.shapes) {
    const Shape s = bench::shape_named(name);
    const size_t block_bytes = size_t(kBlock) * s.hk * kHeadDim * 2;  // K or V
    const int64_t largest = window_blocks(make_tree(args, max_own), args);
    const int64_t blocks = std::max(largest, kLayerBudget / int64_t(2 * block_bytes));
    KvLayer pool{gpu.empty({blocks, kBlock, s.hk, kHeadDim}, DType::kBF16),
                 gpu.empty({blocks, kBlock, s.hk, kHeadDim}, DType::kBF16)};
    {  // random values tiled from a 64 MiB piece (larger than L2), V unlike K
      const int64_t piece = int64_t(32) << 20;
      std::vector<float> host(static_cast<size_t>(piece));
      for (Tensor* dst : {&pool.k, &pool.v}) {
        for (auto& x : host) x = normal(rng);
        Tensor src = gpu.upload(host, {piece}, DType::kBF16);
        const size_t total = dst->bytes(), chunk = src.bytes();
        for (size_t off = 0; off < total; off += chunk)
          BENCH_CUDA(cudaMemcpyAsync(static_cast<char*>(dst->storage.get()) + off,
                                     src.storage.get(), std::min(chunk, total - off),
                                     cudaMemcpyDeviceToDevice, stream));
      }
    }
    const AttentionShape shape{s.hq, s.hk, kHeadDim, 1.0f / std::sqrt(float(kHeadDim))};
    const RelayCostModel cost = RelayCostModel::for_shape(kBlock, s.hq, s.hk, kHeadDim, 2);
    for (int own : args.owns) {
      const Tree tree = make_tree(args, own);
      const int64_t window = window_blocks(tree, args);
      const int layers = int(std::clamp<int64_t>(blocks / window, 1, kMaxLayers));
      const std::vector<KvLayer> views = bench::layer_views(pool, window, layers);
      std::vector<float> qh(size_t(tree.rows) * s.hq * kHeadDim);
      for (auto& x : qh) x = normal(rng);
      Tensor q = gpu.upload(qh, {tree.rows, s.hq, kHeadDim}, DType::kBF16);
      const double kv_token = 2.0 * s.hk * kHeadDim * 2, qo = 2.0 * tree.rows * s.hq * kHeadDim * 2;
      std::printf(
          "{\"kind\": \"tree\", \"device\": \"%s\", \"shape\": \"%s\", \"system\": %d, "
          "\"docs\": %d, \"per_doc\": %d, \"doc\": %d, \"own\": %d, \"rows\": %d, "
          "\"layers\": %d",
          device.c_str(), s.name, args.system, args.docs, args.per_doc, args.doc, own, tree.rows,
          layers);
      std::vector<float> paged_out;
      for (Mode mode : {Mode::kPaged, Mode::kRegistered, Mode::kTree, Mode::kAuto}) {
        const Built b = build(mode, tree, args, own, cost);
        const Timing t = bench::time_attention(gpu, b.plan, q, views, shape, 30);
        if (mode == Mode::kPaged) paged_out = t.out;
        const double bytes = kv_token * double(kv_tokens_read(b.plan)) + qo;
        const cuda::AttentionWorkSummary work = gpu.attention_work_summary(b.plan, shape);
        std::printf(
            ", \"%s\": {\"ms\": %.5f, \"mb\": %.2f, \"frac\": %.4f, \"err\": %.2e, "
            "\"groups\": %d, \"depth\": %d, \"units\": %lld, \"partial_mb\": %.3f}",
            mode_name(mode), t.ms, bytes / 1e6, bytes / bw / (t.ms * 1e-3),
            bench::rel_err(t.out, paged_out), b.groups, b.depth, (long long)work.units,
            work.partial_bytes / 1e6);
      }
      std::printf("}\n");
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace relayllm

int main(int argc, char** argv) {
  return relayllm::bench::run_main("tree_attention_bench",
                                   [&] { return relayllm::run(relayllm::parse_args(argc, argv)); });
}
