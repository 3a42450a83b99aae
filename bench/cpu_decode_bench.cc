// The CPU backend's decode step at one token, linear ops only: SmolLM2-135M's shapes (30
// layers, hidden 576, MLP 1536, 3 KV heads of 64, a tied 49152-row Q8_0 lm_head) in Q4_1
// blocks, the op sequence of LlamaModel at one row. Prints per op kind the best and median
// time per step, its bytes and the achieved GB/s, against the measured copy bandwidth.
//
//   build/cpu_decode_bench [threads] [steps] [fused|separate] [kernels]
//
// fused (default): stacked q/k/v and gate/up (linear_parts, linear_silu_mul), as the model
// runs them; separate: one linear op per projection and a silu_mul, as before the stacked
// ops had their own loops. Weights are random blocks (speed does not depend on the values).
// The machine may be shared: the best step is the least disturbed one.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "random_blocks.h"
#include "relayllm/backend/cpu/cpu_backend.h"

using namespace relayllm;
using relayllm::bench::random_blocks;

namespace {

struct Layer {
  Tensor q, k, v, o, gate, up, down, qkv, gate_up;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 0;
  const int steps = argc > 2 ? std::max(1, std::atoi(argv[2])) : 50;
  const bool fused = argc > 3 ? std::string(argv[3]) != "separate" : true;
  const std::string kernels = argc > 4 ? argv[4] : "";
  const int64_t hidden = 576, inter = 1536, kv = 192, layers = 30, vocab = 49152;
  CpuBackend be(CpuBackendOptions{.num_threads = threads, .kernels = kernels});
  std::mt19937 rng(1);
  const WeightFormat f = WeightFormat::kQ4_1;
  auto weight = [&](int64_t n, int64_t k, WeightFormat fmt = WeightFormat::kQ4_1) {
    return be.upload_blocks(fmt, random_blocks(fmt, n, k, rng), {n, k});
  };
  std::vector<Layer> ls(layers);
  for (Layer& l : ls) {
    l.q = weight(hidden, hidden);
    l.k = weight(kv, hidden);
    l.v = weight(kv, hidden);
    l.o = weight(hidden, hidden);
    l.gate = weight(inter, hidden);
    l.up = weight(inter, hidden);
    l.down = weight(hidden, inter, f);
    l.qkv = be.fuse_rows(std::array{l.q, l.k, l.v});
    l.gate_up = be.fuse_rows(std::array{l.gate, l.up});
  }
  const Tensor lm_head = weight(vocab, hidden, WeightFormat::kQ8_0);
  std::vector<float> xh(static_cast<size_t>(inter));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& v : xh) v = normal(rng);
  const Tensor x = be.upload(std::span(xh).first(size_t(hidden)), {1, hidden}, DType::kF32);
  const Tensor xi = be.upload(xh, {1, inter}, DType::kF32);
  Tensor q = be.empty({1, hidden}, DType::kF32), k = be.empty({1, kv}, DType::kF32),
         v = be.empty({1, kv}, DType::kF32), o = be.empty({1, hidden}, DType::kF32),
         g = be.empty({1, inter}, DType::kF32), u = be.empty({1, inter}, DType::kF32),
         a = be.empty({1, inter}, DType::kF32), logits = be.empty({1, vocab}, DType::kF32);

  // Per op kind: seconds per step, and bytes per step.
  std::map<std::string, std::vector<double>> times;
  std::map<std::string, double> bytes;
  std::vector<double> totals;
  using clock = std::chrono::steady_clock;
  for (int s = 0; s < steps + 1; ++s) {  // step 0 warms the pool and the page tables
    std::map<std::string, double> step;
    auto timed = [&](const std::string& name, double b, auto&& fn) {
      const auto start = clock::now();
      fn();
      step[name] += std::chrono::duration<double>(clock::now() - start).count();
      if (s == 0) bytes[name] += b;
    };
    const auto step_start = clock::now();
    for (Layer& l : ls) {
      if (fused) {
        timed("qkv 960x576", double(l.qkv.bytes()), [&] {
          const std::array<const Tensor*, 3> no_bias{nullptr, nullptr, nullptr};
          be.linear_parts(x, l.qkv, no_bias, std::array<Tensor*, 3>{&q, &k, &v});
        });
      } else {
        timed("q 576x576", double(l.q.bytes()), [&] { be.linear(x, l.q, nullptr, q); });
        timed("k,v 192x576", double(l.k.bytes()), [&] { be.linear(x, l.k, nullptr, k); });
        timed("k,v 192x576", double(l.v.bytes()), [&] { be.linear(x, l.v, nullptr, v); });
      }
      timed("o 576x576", double(l.o.bytes()), [&] { be.linear(x, l.o, nullptr, o); });
      if (fused) {
        timed("gate_up 3072x576 + silu", double(l.gate_up.bytes()),
              [&] { be.linear_silu_mul(x, l.gate_up, g, u, a); });
      } else {
        timed("gate,up 1536x576", double(l.gate.bytes()),
              [&] { be.linear(x, l.gate, nullptr, g); });
        timed("gate,up 1536x576", double(l.up.bytes()), [&] { be.linear(x, l.up, nullptr, u); });
        timed("silu_mul", 0, [&] { be.silu_mul(g, u, a); });
      }
      timed("down 576x1536", double(l.down.bytes()), [&] { be.linear(xi, l.down, nullptr, o); });
    }
    timed("lm_head 49152x576 q8_0", double(lm_head.bytes()),
          [&] { be.linear(x, lm_head, nullptr, logits); });
    const double total = std::chrono::duration<double>(clock::now() - step_start).count();
    if (s == 0) continue;
    totals.push_back(total);
    for (auto& [name, t] : step) times[name].push_back(t);
  }
  const double bw = be.measure_copy_bandwidth();
  double all_bytes = 0;
  for (auto& [name, b] : bytes) all_bytes += b;
  std::printf("%s, %d threads, %s kernels, %d steps; copy bandwidth %.1f GB/s\n",
              fused ? "fused" : "separate", be.pool().size(), be.kernels().isa, steps, bw / 1e9);
  std::printf("| op | best us/step | median us/step | MB/step | GB/s (best) | of floor (best) |\n");
  std::printf("|---|---:|---:|---:|---:|---:|\n");
  for (auto& [name, t] : times) {
    const double best = *std::min_element(t.begin(), t.end());
    std::printf("| %s | %.0f | %.0f | %.2f | %.1f | %.0f%% |\n", name.c_str(), best * 1e6,
                median(t) * 1e6, bytes[name] / 1e6, bytes[name] / best / 1e9,
                100.0 * bytes[name] / bw / best);
  }
  const double best = *std::min_element(totals.begin(), totals.end());
  std::printf("| step | %.0f | %.0f | %.2f | %.1f | %.0f%% |\n", best * 1e6, median(totals) * 1e6,
              all_bytes / 1e6, all_bytes / best / 1e9, 100.0 * all_bytes / bw / best);
  return 0;
}
