// Decode attention on the CUDA backend: relay (prefix once per group + own tokens
// + merge) against paged attention without relay (the same kernel, the prefix
// copied into every request's own blocks), at Llama-2-7B (32/32 heads) and
// Llama-3-8B (32/8 heads) shapes, head_dim 128, block size 16.
//
// For each configuration it prints one JSON line: the time of one attention call
// as the engine's decode step runs it -- inside one CUDA graph that holds the
// attention of several layers, each over its own KV (so that the bytes come from
// device memory, not L2), median replay time divided by the layers -- and, beside
// it, one call replayed alone as a graph (the graph's launch latency included)
// and one call launched op by op; the fewest bytes each method must move (KV read
// once, q read and out written once) and the fraction of the copy bandwidth
// measured at the start of the same run (device-to-device cudaMemcpy, read +
// write bytes). Relay and paged outputs are compared (relative L2 error).
//
// Usage: attention_bench [--quick] [--batches 1,32] [--prefixes 2048] [--owns 128]
//          [--shapes llama2-7b,llama3-8b] [--items-per-sm N] [--min-split N]
//          [--prefix-from-copy] [--paged-first]
//        > ours.jsonl
// Two diagnostics for relay vs paged at one request: --prefix-from-copy has relay
// read the prefix from request 0's copy (at B=1 both then read the same bytes at
// the same addresses), --paged-first times paged before relay.
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

#include "attention_timing.h"
#include "bench_main.h"
#include "decode_plans.h"
#include "relayllm/backend/cuda/cuda_backend.h"
#include "relayllm/common/error.h"

namespace relayllm {
namespace {

using bench::decode_plan;
using bench::kBlock;
using bench::kHeadDim;
using bench::layer_views;
using bench::rel_err;
using bench::Shape;
using bench::time_attention;
using bench::Timing;
// Layers per timed graph: enough that a small configuration's KV (10 MB at one
// request) is read from device memory on every call, not from the 50 MB L2; the
// layers' windows of the pool fit in kLayerBudget bytes (K and V).
constexpr int kMaxLayers = 16;
constexpr int64_t kLayerBudget = int64_t(16) << 30;

struct Args {
  std::vector<int> batches{1, 8, 32, 64, 128}, prefixes{512, 2048, 8192}, owns{128, 512};
  std::vector<std::string> shapes{"llama2-7b", "llama3-8b"};
  CudaBackendOptions backend;
  bool prefix_from_copy = false;
  bool paged_first = false;
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
    } else if (k == "--prefix-from-copy") {
      a.prefix_from_copy = true;
    } else if (k == "--paged-first") {
      a.paged_first = true;
    } else {
      fail("attention_bench: unknown argument '{}'", k);
    }
  }
  return a;
}

int run(const Args& args) {
  CudaBackend gpu(args.backend);
  cudaStream_t stream = static_cast<cudaStream_t>(gpu.stream());
  const double bw = bench::print_copy_line(gpu, "attention_bench", bench::device_name());

  std::vector<Shape> shapes;
  for (const std::string& name : args.shapes) shapes.push_back(bench::shape_named(name));
  const std::vector<int>& batches = args.batches;
  const std::vector<int>& prefixes = args.prefixes;
  const std::vector<int>& owns = args.owns;
  const int max_b = *std::max_element(batches.begin(), batches.end());
  const int max_p = *std::max_element(prefixes.begin(), prefixes.end());
  const int max_o = *std::max_element(owns.begin(), owns.end());
  std::mt19937_64 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);

  // A configuration's window of the pool: [prefix][own blocks of each request]
  // [prefix copies of each request] (relay reads the first two, paged the last two).
  auto window_blocks = [](int batch, int prefix, int own) {
    return int64_t(prefix / kBlock) + int64_t(batch) * ((own + kBlock - 1) / kBlock) +
           int64_t(batch) * (prefix / kBlock);
  };
  for (const Shape& s : shapes) {
    const size_t block_bytes = size_t(kBlock) * s.hk * kHeadDim * 2;  // K or V
    const int64_t blocks =
        std::max(window_blocks(max_b, max_p, max_o), kLayerBudget / int64_t(2 * block_bytes));
    KvLayer pool{gpu.empty({blocks, kBlock, s.hk, kHeadDim}, DType::kBF16),
                 gpu.empty({blocks, kBlock, s.hk, kHeadDim}, DType::kBF16)};
    // Random values, tiled from a 64 MiB random piece (larger than L2, never zeros).
    {
      const int64_t piece = int64_t(32) << 20;  // elements
      std::vector<float> host(static_cast<size_t>(piece));
      for (auto& x : host) x = normal(rng);
      Tensor src = gpu.upload(host, {piece}, DType::kBF16);
      for (Tensor* dst : {&pool.k, &pool.v}) {
        const size_t total = dst->bytes(), chunk = src.bytes();
        for (size_t off = 0; off < total; off += chunk)
          BENCH_CUDA(cudaMemcpyAsync(static_cast<char*>(dst->storage.get()) + off,
                                     src.storage.get(), std::min(chunk, total - off),
                                     cudaMemcpyDeviceToDevice, stream));
        for (auto& x : host) x = normal(rng);  // V gets other values than K
        src = gpu.upload(host, {piece}, DType::kBF16);
      }
    }
    AttentionShape shape{s.hq, s.hk, kHeadDim, 1.0f / std::sqrt(float(kHeadDim))};
    for (int prefix : prefixes)
      for (int own : owns)
        for (int batch : batches) {
          const int64_t window = window_blocks(batch, prefix, own);
          const int layers = int(std::clamp<int64_t>(blocks / window, 1, kMaxLayers));
          const std::vector<KvLayer> views = layer_views(pool, window, layers);
          const int32_t own_base = prefix / kBlock;
          const int32_t copy_base = own_base + batch * ((own + kBlock - 1) / kBlock);
          const int32_t prefix_base = args.prefix_from_copy ? copy_base : 0;
          // The paged baseline's prefix copies, in every layer's window.
          for (const KvLayer& kv : views)
            for (int b = 0; b < batch; ++b)
              for (const Tensor* t : {&kv.k, &kv.v})
                BENCH_CUDA(cudaMemcpyAsync(
                    static_cast<char*>(t->storage.get()) +
                        (size_t(copy_base) + size_t(b) * (prefix / kBlock)) * block_bytes,
                    t->storage.get(), size_t(prefix / kBlock) * block_bytes,
                    cudaMemcpyDeviceToDevice, stream));
          std::vector<float> qh(size_t(batch) * s.hq * kHeadDim);
          for (auto& x : qh) x = normal(rng);
          Tensor q = gpu.upload(qh, {batch, s.hq, kHeadDim}, DType::kBF16);
          const int reps = batch * (prefix + own) > 200000 ? 20 : 50;
          BatchPlan relay_plan =
              decode_plan(batch, prefix, own, true, prefix_base, own_base, copy_base);
          BatchPlan paged_plan =
              decode_plan(batch, prefix, own, false, prefix_base, own_base, copy_base);
          Timing relay, paged;
          if (args.paged_first) paged = time_attention(gpu, paged_plan, q, views, shape, reps);
          relay = time_attention(gpu, relay_plan, q, views, shape, reps);
          if (!args.paged_first) paged = time_attention(gpu, paged_plan, q, views, shape, reps);
          // The work lists as the backend cuts them: units, the stages the longest CTA
          // runs, and the partials' bytes beyond the floor's.
          const cuda::AttentionWorkSummary relay_work =
              gpu.attention_work_summary(relay_plan, shape);
          const cuda::AttentionWorkSummary paged_work =
              gpu.attention_work_summary(paged_plan, shape);
          const double kv_token = 2.0 * s.hk * kHeadDim * 2;  // K and V, bf16
          const double qo = 2.0 * batch * s.hq * kHeadDim * 2;
          const double relay_bytes = kv_token * (prefix + double(batch) * own) + qo;
          const double paged_bytes = kv_token * double(batch) * (prefix + own) + qo;
          std::printf(
              "{\"kind\": \"ours\", \"shape\": \"%s\", \"batch\": %d, \"prefix\": %d, \"own\": %d, "
              "\"layers\": %d, \"relay_ms\": %.5f, \"paged_ms\": %.5f, \"relay_bytes\": %.0f, "
              "\"paged_bytes\": %.0f, \"relay_frac\": %.4f, \"paged_frac\": %.4f, "
              "\"relay_vs_paged_err\": %.3e, \"items_per_sm\": %d, \"min_split\": %d, "
              "\"relay_single_ms\": %.5f, \"paged_single_ms\": %.5f, "
              "\"relay_eager_ms\": %.5f, \"paged_eager_ms\": %.5f, "
              "\"relay_units\": %lld, \"relay_makespan_stages\": %lld, \"relay_partial_mb\": %.3f, "
              "\"paged_units\": %lld, \"paged_makespan_stages\": %lld, \"paged_partial_mb\": "
              "%.3f}\n",
              s.name, batch, prefix, own, layers, relay.ms, paged.ms, relay_bytes, paged_bytes,
              relay_bytes / bw / (relay.ms * 1e-3), paged_bytes / bw / (paged.ms * 1e-3),
              rel_err(relay.out, paged.out), args.backend.attention_items_per_sm,
              args.backend.attention_min_split, relay.single_ms, paged.single_ms, relay.eager_ms,
              paged.eager_ms, (long long)relay_work.units, (long long)relay_work.makespan_stages,
              relay_work.partial_bytes / 1e6, (long long)paged_work.units,
              (long long)paged_work.makespan_stages, paged_work.partial_bytes / 1e6);
          std::fflush(stdout);
        }
  }
  return 0;
}

}  // namespace
}  // namespace relayllm

int main(int argc, char** argv) {
  return relayllm::bench::run_main("attention_bench",
                                   [&] { return relayllm::run(relayllm::parse_args(argc, argv)); });
}
