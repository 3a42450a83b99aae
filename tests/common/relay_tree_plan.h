// Random steps over nested relay groups, for the attention tests of backends that
// take several levels per row (the CUDA work list on the host, the CUDA kernel
// against the CPU reference). A step is a random prefix tree of depth 1-3: an
// outermost level (a registered prefix of any length, or an automatic group of
// whole blocks), nested automatic levels of whole blocks below it, and sequences
// at any node (a request whose shared run ends at a document, next to siblings
// that share a sub-part too), mixed with sequences that have no group. A
// sequence's rows are a decode row or a prefill chunk: a chunk's own range starts
// where the shared run ends, at any block of the prompt. Block ids are a random
// permutation of the pool, so no two ranges are adjacent by accident.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "relayllm/backend/batch_plan.h"
#include "relayllm/backend/batch_plan_builder.h"

namespace relayllm::testing {

struct TreeStepOptions {
  int32_t block_size = 16;
  int32_t depth = 3;             // levels of groups in the deepest chain (1-3)
  bool registered_root = false;  // the outermost level is a registered prefix
  bool aligned = true;           // lengths that end on block boundaries
  int32_t max_level_blocks = 8;  // blocks of an automatic level: 1..this
  int32_t max_context = 300;     // own tokens of a decode row: 1..this
  int32_t max_chunk = 40;        // rows of a prefill chunk: 2..this
  int32_t loose = 3;             // sequences without a group
};

struct TreeStep {
  BatchPlan plan;
  int32_t num_blocks = 0;  // pool blocks the plan's tables index
  int32_t depth = 0;       // deepest chain of groups formed
};

namespace detail {

struct OwnPart {
  int32_t query_len, context_len;
};

struct Node {
  int32_t tokens = 0;  // this level's tokens (a registered root: any; else whole blocks)
  bool registered = false;
  std::vector<OwnPart> seqs;  // sequences whose innermost group is this node
  std::vector<int32_t> kids;  // nested nodes
  int32_t members = 0;        // sequences at or below
};

}  // namespace detail

inline TreeStep random_tree_step(uint64_t seed, const TreeStepOptions& o) {
  using detail::Node;
  using detail::OwnPart;
  std::mt19937_64 rng(seed);
  auto uniform = [&](int32_t lo, int32_t hi) {
    return lo + int32_t(rng() % uint64_t(hi - lo + 1));
  };
  const int32_t bs = o.block_size;
  auto own_part = [&]() {
    // Decode rows mostly; one in three a prefill chunk of a prompt whose earlier
    // blocks are read through the groups above it.
    if (rng() % 3 == 0) {
      const int32_t q = uniform(2, o.max_chunk);
      int32_t ctx = q + (rng() % 2 ? 0 : uniform(1, 3 * bs));
      if (o.aligned) ctx = std::max(q, (ctx + bs - 1) / bs * bs);
      return OwnPart{q, ctx};
    }
    int32_t ctx = uniform(1, o.max_context);
    if (o.aligned && ctx > bs) ctx = ctx / bs * bs + 1;  // one decode token past a block
    return OwnPart{1, ctx};
  };

  std::vector<Node> nodes;
  // Builds a node at `level` (1 = outermost) and the subtree under it.
  auto build = [&](auto& self, int32_t level) -> int32_t {
    const int32_t index = int32_t(nodes.size());
    nodes.emplace_back();
    Node n;
    if (level == 1 && o.registered_root) {
      n.registered = true;
      n.tokens =
          o.aligned ? uniform(1, o.max_level_blocks) * bs : uniform(1, o.max_level_blocks * bs);
    } else {
      n.tokens = uniform(1, o.max_level_blocks) * bs;
    }
    if (level < o.depth) {
      const int32_t kids = uniform(1, 3);
      for (int32_t k = 0; k < kids; ++k) n.kids.push_back(self(self, level + 1));
    }
    // Sequences of this node's own: at a leaf two or more (a group of one is never
    // formed), above it none to two.
    const int32_t direct = n.kids.empty() ? uniform(2, 4) : uniform(0, 2);
    for (int32_t s = 0; s < direct; ++s) n.seqs.push_back(own_part());
    n.members = int32_t(n.seqs.size());
    for (int32_t k : n.kids) n.members += nodes[size_t(k)].members;
    nodes[size_t(index)] = n;
    return index;
  };
  std::vector<int32_t> roots;
  const int32_t num_roots = uniform(1, 2);
  for (int32_t r = 0; r < num_roots; ++r) roots.push_back(build(build, 1));
  // A registered prefix with a single request in the step (read joined to its own
  // tokens) next to the tree.
  if (o.registered_root) {
    Node single;
    single.registered = true;
    single.tokens = uniform(1, o.max_level_blocks * bs);
    single.seqs.push_back(own_part());
    single.members = 1;
    roots.push_back(int32_t(nodes.size()));
    nodes.push_back(single);
  }
  std::vector<OwnPart> loose;
  for (int32_t s = 0; s < o.loose; ++s) loose.push_back(own_part());

  // Pool blocks: every level's and every sequence's, in a random order.
  auto blocks_of = [&](int32_t tokens) { return (tokens + bs - 1) / bs; };
  int32_t total = 2;
  for (const Node& n : nodes) {
    total += blocks_of(n.tokens);
    for (const OwnPart& p : n.seqs) total += blocks_of(p.context_len);
  }
  for (const OwnPart& p : loose) total += blocks_of(p.context_len);
  std::vector<int32_t> perm(static_cast<size_t>(total));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  size_t next = 0;
  auto take = [&](int32_t tokens) {
    std::vector<int32_t> t(perm.begin() + long(next),
                           perm.begin() + long(next) + blocks_of(tokens));
    next += t.size();
    return t;
  };

  TreeStep step;
  step.num_blocks = total;
  BatchPlanBuilder builder(bs);
  int64_t key = 0;
  auto add = [&](int32_t group, int32_t offset, const OwnPart& p) {
    const std::vector<int32_t> tokens(size_t(p.query_len), 0);
    const std::vector<int32_t> table = take(p.context_len);
    builder.add_sequence({tokens, p.context_len - p.query_len, table, group, offset});
  };
  // Groups first (parents before children), then the sequences of each node, in an
  // order that interleaves subtrees and loose sequences as an engine's batch does.
  struct Pending {
    int32_t group, offset;
    OwnPart part;
  };
  std::vector<Pending> pending;
  auto emit = [&](auto& self, int32_t index, int32_t parent, int32_t offset,
                  int32_t level) -> void {
    const Node& n = nodes[size_t(index)];
    const std::vector<int32_t> table = take(n.tokens);
    const int32_t g = n.registered ? builder.prefix_group(key++, n.tokens, table)
                                   : builder.nested_group(parent, table);
    step.depth = std::max(step.depth, level);
    for (const OwnPart& p : n.seqs) pending.push_back({g, offset + n.tokens, p});
    for (int32_t k : n.kids) self(self, k, g, offset + n.tokens, level + 1);
  };
  for (int32_t r : roots) emit(emit, r, -1, 0, 1);
  for (const OwnPart& p : loose) pending.push_back({-1, 0, p});
  std::shuffle(pending.begin(), pending.end(), rng);
  for (const Pending& p : pending) add(p.group, p.offset, p.part);
  step.plan = builder.take();
  return step;
}

}  // namespace relayllm::testing
