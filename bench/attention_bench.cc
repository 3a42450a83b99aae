// Decode attention on the CUDA backend: relay (prefix once per group + own tokens
// + merge) against paged attention without relay (the same kernels, the prefix
// copied into every request's own blocks), at Llama-2-7B (32/32 heads) and
// Llama-3-8B (32/8 heads) shapes, head_dim 128, block size 16.
//
// For each configuration it prints one JSON line: median time of one attention
// call replayed as a CUDA graph (device events, after warm-up; the eager time
// beside it), the fewest bytes each method must move
// (KV read once, q read and out written once) and the fraction of the copy
// bandwidth measured at the start of the same run (device-to-device cudaMemcpy,
// read + write bytes). Relay and paged outputs are compared (relative L2 error).
//
// Usage: attention_bench [--quick] [--batches 1,32] [--prefixes 2048] [--owns 128]
//          [--shapes llama2-7b,llama3-8b] [--items-per-sm N] [--min-split N]
//        > ours.jsonl
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "relayllm/backend/cuda/cuda_backend.h"
#include "relayllm/common/error.h"

namespace relayllm {
namespace {

#define BENCH_CUDA(expr)                                                           \
  do {                                                                             \
    cudaError_t e_ = (expr);                                                       \
    if (e_ != cudaSuccess) fail("{} failed: {}", #expr, cudaGetErrorString(e_));   \
  } while (0)

constexpr int kHeadDim = 128;
constexpr int kBlock = 16;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Bytes per second of a large device-to-device copy, counting bytes read and written.
double copy_bandwidth(cudaStream_t stream) {
  const size_t bytes = size_t(2) << 30;
  void *a = nullptr, *b = nullptr;
  BENCH_CUDA(cudaMalloc(&a, bytes));
  BENCH_CUDA(cudaMalloc(&b, bytes));
  BENCH_CUDA(cudaMemsetAsync(a, 0x3c, bytes, stream));
  cudaEvent_t e0, e1;
  BENCH_CUDA(cudaEventCreate(&e0));
  BENCH_CUDA(cudaEventCreate(&e1));
  std::vector<double> ms;
  for (int i = 0; i < 23; ++i) {
    BENCH_CUDA(cudaEventRecord(e0, stream));
    BENCH_CUDA(cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice, stream));
    BENCH_CUDA(cudaEventRecord(e1, stream));
    BENCH_CUDA(cudaEventSynchronize(e1));
    float t = 0;
    BENCH_CUDA(cudaEventElapsedTime(&t, e0, e1));
    if (i >= 3) ms.push_back(t);
  }
  cudaFree(a);
  cudaFree(b);
  return 2.0 * double(bytes) / (median(ms) * 1e-3);
}

struct Shape {
  const char* name;
  int hq, hk;
};

struct Timing {
  double ms = 0;        // graph replay
  double eager_ms = 0;  // launched op by op
  std::vector<float> out;
};

// One step's plan: B decode rows, each with `own` tokens of its own context
// (the new token included); with relay, one prefix group of P tokens.
BatchPlan make_plan(int batch, int prefix, int own, bool relay, int32_t prefix_base, int32_t own_base,
                    int32_t copy_base) {
  BatchPlan plan;
  plan.block_size = kBlock;
  const int own_blocks = (own + kBlock - 1) / kBlock;
  const int prefix_blocks = prefix / kBlock;  // prefixes here are multiples of the block
  for (int b = 0; b < batch; ++b) {
    PlannedSequence seq;
    seq.query_start = b;
    seq.query_len = 1;
    seq.block_table_start = int32_t(plan.block_tables.size());
    if (relay) {
      seq.context_len = own;
      seq.position_offset = prefix;
      seq.prefix_group = 0;
    } else {
      seq.context_len = prefix + own;
      for (int j = 0; j < prefix_blocks; ++j) plan.block_tables.push_back(copy_base + b * prefix_blocks + j);
    }
    for (int j = 0; j < own_blocks; ++j) plan.block_tables.push_back(own_base + b * own_blocks + j);
    seq.num_blocks = int32_t(plan.block_tables.size()) - seq.block_table_start;
    plan.sequences.push_back(seq);
    plan.token_ids.push_back(0);
    plan.positions.push_back(prefix + own - 1);
    plan.slot_mapping.push_back(0);
  }
  if (relay) {
    PlannedPrefixGroup g;
    g.prefix_len = prefix;
    g.block_table_start = int32_t(plan.block_tables.size());
    g.num_blocks = prefix_blocks;
    for (int j = 0; j < prefix_blocks; ++j) plan.block_tables.push_back(prefix_base + j);
    for (int b = 0; b < batch; ++b) g.query_rows.push_back(b);
    plan.prefix_groups.push_back(g);
  }
  return plan;
}

double time_calls(cudaStream_t stream, int reps, const std::function<void()>& call) {
  for (int i = 0; i < 3; ++i) call();
  cudaEvent_t e0, e1;
  BENCH_CUDA(cudaEventCreate(&e0));
  BENCH_CUDA(cudaEventCreate(&e1));
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    BENCH_CUDA(cudaEventRecord(e0, stream));
    call();
    BENCH_CUDA(cudaEventRecord(e1, stream));
    BENCH_CUDA(cudaEventSynchronize(e1));
    float v = 0;
    BENCH_CUDA(cudaEventElapsedTime(&v, e0, e1));
    ms.push_back(v);
  }
  BENCH_CUDA(cudaGetLastError());
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return median(ms);
}

// One attention call timed two ways: replaying a CUDA graph of it (how the
// engine's decode steps run it) and launched op by op, where the host's launch
// latency of its 3-5 launches (cursor reset, kernels, merge) adds to the time.
Timing time_attention(CudaBackend& gpu, const BatchPlan& plan, const Tensor& q, const KvLayer& kv,
                      const AttentionShape& shape, int reps) {
  cudaStream_t stream = static_cast<cudaStream_t>(gpu.stream());
  Tensor out = gpu.empty(q.shape, DType::kBF16);
  BENCH_CUDA(cudaMemsetAsync(out.storage.get(), 0xff, out.bytes(), stream));  // NaN poison
  gpu.begin_step(plan, StepInfo{shape, 0});
  gpu.attention(q, kv, shape, plan, out);
  Timing t;
  t.out.resize(size_t(out.numel()));
  gpu.download(out, t.out);
  t.eager_ms = time_calls(stream, reps, [&] { gpu.attention(q, kv, shape, plan, out); });
  constexpr int64_t kGraphKey = 1;
  gpu.capture_begin();
  gpu.attention(q, kv, shape, plan, out);
  gpu.capture_end(kGraphKey);
  t.ms = time_calls(stream, reps, [&] {
    if (!gpu.replay(kGraphKey)) fail("attention_bench: graph not recorded");
  });
  std::vector<float> replayed(t.out.size());
  gpu.download(out, replayed);
  if (replayed != t.out) fail("attention_bench: graph replay differs from the eager call");
  return t;
}

double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

struct Args {
  std::vector<int> batches{1, 8, 32, 64, 128}, prefixes{512, 2048, 8192}, owns{128, 512};
  std::vector<std::string> shapes{"llama2-7b", "llama3-8b"};
  CudaBackendOptions backend;
};

std::vector<int> int_list(const std::string& text) {
  std::vector<int> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoi(item));
  return out;
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail("attention_bench: {} needs a value", k);
      return argv[++i];
    };
    if (k == "--quick") {
      a.batches = {1, 32};
      a.prefixes = {2048};
    } else if (k == "--batches") {
      a.batches = int_list(value());
    } else if (k == "--prefixes") {
      a.prefixes = int_list(value());
    } else if (k == "--owns") {
      a.owns = int_list(value());
    } else if (k == "--shapes") {
      a.shapes.clear();
      std::stringstream in(value());
      for (std::string item; std::getline(in, item, ',');) a.shapes.push_back(item);
    } else if (k == "--items-per-sm") {
      a.backend.attention_items_per_sm = std::stoi(value());
    } else if (k == "--min-split") {
      a.backend.attention_min_split = std::stoi(value());
    } else {
      fail("attention_bench: unknown argument '{}'", k);
    }
  }
  return a;
}

int run(const Args& args) {
  CudaBackend gpu(args.backend);
  cudaStream_t stream = static_cast<cudaStream_t>(gpu.stream());
  const double bw = copy_bandwidth(stream);
  cudaDeviceProp prop{};
  BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("{\"kind\": \"copy\", \"device\": \"%s\", \"copy_bw_gbs\": %.1f}\n", prop.name, bw / 1e9);
  std::fflush(stdout);

  std::vector<Shape> shapes;
  for (const std::string& name : args.shapes) {
    if (name == "llama2-7b") shapes.push_back({"llama2-7b", 32, 32});
    else if (name == "llama3-8b") shapes.push_back({"llama3-8b", 32, 8});
    else fail("attention_bench: unknown shape '{}'", name);
  }
  const std::vector<int>& batches = args.batches;
  const std::vector<int>& prefixes = args.prefixes;
  const std::vector<int>& owns = args.owns;
  const int max_b = *std::max_element(batches.begin(), batches.end());
  const int max_p = *std::max_element(prefixes.begin(), prefixes.end());
  const int max_o = *std::max_element(owns.begin(), owns.end());
  std::mt19937_64 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);

  for (const Shape& s : shapes) {
    // Pool: [prefix][own blocks of each request][prefix copies of each request].
    const int64_t blocks = max_p / kBlock + int64_t(max_b) * (max_o / kBlock) + int64_t(max_b) * (max_p / kBlock);
    KvLayer kv{gpu.empty({blocks, kBlock, s.hk, kHeadDim}, DType::kBF16),
               gpu.empty({blocks, kBlock, s.hk, kHeadDim}, DType::kBF16)};
    // Random values, tiled from a 64 MiB random piece (larger than L2, never zeros).
    {
      const int64_t piece = int64_t(32) << 20;  // elements
      std::vector<float> host(static_cast<size_t>(piece));
      for (auto& x : host) x = normal(rng);
      Tensor src = gpu.upload(host, {piece}, DType::kBF16);
      for (Tensor* dst : {&kv.k, &kv.v}) {
        const size_t total = dst->bytes(), chunk = src.bytes();
        for (size_t off = 0; off < total; off += chunk)
          BENCH_CUDA(cudaMemcpyAsync(static_cast<char*>(dst->storage.get()) + off, src.storage.get(),
                                     std::min(chunk, total - off), cudaMemcpyDeviceToDevice, stream));
        for (auto& x : host) x = normal(rng);  // V gets other values than K
        src = gpu.upload(host, {piece}, DType::kBF16);
      }
    }
    AttentionShape shape{s.hq, s.hk, kHeadDim, 1.0f / std::sqrt(float(kHeadDim))};
    const size_t block_bytes = size_t(kBlock) * s.hk * kHeadDim * 2;
    for (int prefix : prefixes)
      for (int own : owns) {
        const int32_t prefix_base = 0;
        const int32_t own_base = max_p / kBlock;
        const int32_t copy_base = own_base + max_b * (max_o / kBlock);
        // The paged baseline's prefix copies, for every request that any batch uses.
        for (int b = 0; b < max_b; ++b)
          for (Tensor* t : {&kv.k, &kv.v})
            BENCH_CUDA(cudaMemcpyAsync(static_cast<char*>(t->storage.get()) +
                                           (size_t(copy_base) + size_t(b) * (prefix / kBlock)) * block_bytes,
                                       t->storage.get(), size_t(prefix / kBlock) * block_bytes,
                                       cudaMemcpyDeviceToDevice, stream));
        for (int batch : batches) {
          std::vector<float> qh(size_t(batch) * s.hq * kHeadDim);
          for (auto& x : qh) x = normal(rng);
          Tensor q = gpu.upload(qh, {batch, s.hq, kHeadDim}, DType::kBF16);
          const int reps = batch * (prefix + own) > 200000 ? 20 : 50;
          BatchPlan relay_plan = make_plan(batch, prefix, own, true, prefix_base, own_base, copy_base);
          BatchPlan paged_plan = make_plan(batch, prefix, own, false, prefix_base, own_base, copy_base);
          Timing relay = time_attention(gpu, relay_plan, q, kv, shape, reps);
          Timing paged = time_attention(gpu, paged_plan, q, kv, shape, reps);
          const double kv_token = 2.0 * s.hk * kHeadDim * 2;  // K and V, bf16
          const double qo = 2.0 * batch * s.hq * kHeadDim * 2;
          const double relay_bytes = kv_token * (prefix + double(batch) * own) + qo;
          const double paged_bytes = kv_token * double(batch) * (prefix + own) + qo;
          std::printf(
              "{\"kind\": \"ours\", \"shape\": \"%s\", \"batch\": %d, \"prefix\": %d, \"own\": %d, "
              "\"relay_ms\": %.5f, \"paged_ms\": %.5f, \"relay_bytes\": %.0f, \"paged_bytes\": %.0f, "
              "\"relay_frac\": %.4f, \"paged_frac\": %.4f, \"relay_vs_paged_err\": %.3e, "
              "\"items_per_sm\": %d, \"min_split\": %d, \"relay_eager_ms\": %.5f, "
              "\"paged_eager_ms\": %.5f}\n",
              s.name, batch, prefix, own, relay.ms, paged.ms, relay_bytes, paged_bytes,
              relay_bytes / bw / (relay.ms * 1e-3), paged_bytes / bw / (paged.ms * 1e-3),
              rel_err(relay.out, paged.out), args.backend.attention_items_per_sm,
              args.backend.attention_min_split, relay.eager_ms,
              paged.eager_ms);
          std::fflush(stdout);
        }
      }
  }
  return 0;
}

}  // namespace
}  // namespace relayllm

int main(int argc, char** argv) {
  try {
    return relayllm::run(relayllm::parse_args(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attention_bench: %s\n", e.what());
    return 1;
  }
}
