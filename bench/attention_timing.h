// Timing of one attention call on the CUDA backend as a decode step's graph runs
// it, shared by the attention benchmarks (attention_bench, tree_attention_bench).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "cuda_device.h"
#include "relayllm/backend/cuda/cuda_backend.h"
#include "relayllm/common/error.h"

namespace relayllm::bench {

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Timing {
  double ms = 0;         // per call, in a graph of one call per layer
  double single_ms = 0;  // one call replayed alone as a graph
  double eager_ms = 0;   // one call launched op by op
  std::vector<float> out;
};

inline double time_calls(cudaStream_t stream, int reps, const std::function<void()>& call) {
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

// One attention call timed three ways. The headline: a CUDA graph holding the
// call once per layer, each layer over its own window of the pool, as a decode
// step's graph holds every layer's attention; its replay time divided by the
// layers. Beside it: the call replayed alone as a graph, where the graph launch's
// latency (0-3 us on an H100, paid once per decode step by the engine) adds to the
// time, and the call launched op by op, where the host's launch latency of its
// kernel adds as well. All layers hold the same plan; the
// output checked is the last layer's.
inline Timing time_attention(CudaBackend& gpu, const BatchPlan& plan, const Tensor& q,
                             const std::vector<KvLayer>& layers, const AttentionShape& shape,
                             int reps) {
  cudaStream_t stream = static_cast<cudaStream_t>(gpu.stream());
  const KvLayer& last = layers.back();
  Tensor out = gpu.empty(q.shape, DType::kBF16);
  BENCH_CUDA(cudaMemsetAsync(out.storage.get(), 0xff, out.bytes(), stream));  // NaN poison
  gpu.begin_step(plan, StepInfo{shape, 0});
  gpu.attention(q, last, shape, plan, out);
  Timing t;
  t.out.resize(size_t(out.numel()));
  gpu.download(out, t.out);
  t.eager_ms = time_calls(stream, reps, [&] { gpu.attention(q, last, shape, plan, out); });
  std::vector<float> replayed(t.out.size());
  constexpr int64_t kSingleKey = 1, kLayersKey = 2;
  gpu.capture_begin();
  gpu.attention(q, last, shape, plan, out);
  gpu.capture_end(kSingleKey);
  gpu.capture_begin();
  for (const KvLayer& kv : layers) gpu.attention(q, kv, shape, plan, out);
  gpu.capture_end(kLayersKey);
  for (int64_t key : {kSingleKey, kLayersKey}) {
    BENCH_CUDA(cudaMemsetAsync(out.storage.get(), 0xff, out.bytes(), stream));
    if (!gpu.replay(key)) fail("attention benchmark: graph not recorded");
    gpu.download(out, replayed);
    // Bitwise: the same kernels on the same inputs must give the same bits.
    if (std::memcmp(replayed.data(), t.out.data(), t.out.size() * sizeof(float)) != 0)
      fail("attention benchmark: graph replay differs from the eager call");
    const double ms = time_calls(stream, reps, [&] {
      if (!gpu.replay(key)) fail("attention benchmark: graph not recorded");
    });
    if (key == kSingleKey)
      t.single_ms = ms;
    else
      t.ms = ms / double(layers.size());
  }
  return t;
}

// Views of one window of `blocks` pool blocks per layer, the windows side by side.
inline std::vector<KvLayer> layer_views(const KvLayer& pool, int64_t blocks, int count) {
  std::vector<KvLayer> layers;
  for (int l = 0; l < count; ++l) {
    KvLayer kv;
    for (auto [dst, src] : {std::pair{&kv.k, &pool.k}, std::pair{&kv.v, &pool.v}}) {
      const size_t block_bytes = src->bytes() / size_t(src->dim(0));
      char* base =
          static_cast<char*>(src->storage.get()) + size_t(l) * size_t(blocks) * block_bytes;
      *dst = Tensor{std::shared_ptr<void>(src->storage, base),
                    src->dtype,
                    {blocks, src->dim(1), src->dim(2), src->dim(3)}};
    }
    layers.push_back(kv);
  }
  return layers;
}

inline double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace relayllm::bench
