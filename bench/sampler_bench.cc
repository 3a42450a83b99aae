// Host sampling per logits row, the work after each forward pass on every backend: the greedy
// path of an unrestricted request (the row read in place) against the general path (the row
// copied, restrictions applied, then searched; forced by a zero logit_bias, which changes no
// value), at vocabularies of 32k, 49k and 128k. Each row is read once on the fast path, so the
// floor is its bytes at one core's memory bandwidth; the reference printed beside it is one
// core's copy bandwidth over the same rows (memcpy into a row buffer, read + write bytes).
// Beside them, the sampled paths at temperature 1 (every logit exponentiated) and with top_p 0.9
// (the nucleus selected; on these flat random rows nearly every token is a candidate, the
// worst case). Rounds alternate the paths, so a busy machine slows all of them alike.
//
//   sampler_bench [rows=256] [rounds=5] [spread=1]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "relayllm/engine/sampler.h"
#include "relayllm/engine/sampling_params.h"

namespace {

using namespace relayllm;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int rows = argc > 1 ? std::atoi(argv[1]) : 256;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 5;
  // The logits' spread: 1 gives flat rows (nearly every token in a top_p nucleus, the worst
  // case); a trained model's rows are peaked, about as a spread of 3 (a nucleus of a few
  // hundred tokens at top_p 0.9).
  const float spread = argc > 3 ? float(std::atof(argv[3])) : 1.0f;
  std::printf(
      "| vocab | rows | general path us/row | in-place greedy us/row | speedup | row read GB/s | "
      "copy GB/s (one core, read + write) | temperature 1 us/row | top_p 0.9 us/row |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (size_t vocab : {size_t(32000), size_t(49152), size_t(128256)}) {
    std::mt19937 gen(1);
    std::normal_distribution<float> normal;
    // `rows` distinct rows, as a batch's logits are: the set exceeds the caches from 32k x 64.
    std::vector<float> logits(vocab * size_t(rows));
    for (float& x : logits) x = spread * normal(gen);
    SamplingParams fast_params, general_params, random_params, nucleus_params;
    fast_params.temperature = general_params.temperature = 0.0f;
    random_params.temperature = nucleus_params.temperature = 1.0f;
    nucleus_params.top_p = 0.9f;
    general_params.logit_bias = {{0, 0.0f}};
    std::vector<int32_t> prompt(64, 5), output(64, 7), eos{2};
    RequestRng rng(1);
    std::vector<float> scratch;
    std::vector<float> copy(vocab);
    double best_fast = 1e30, best_general = 1e30, best_copy = 1e30, best_random = 1e30,
           best_nucleus = 1e30;
    int64_t check = 0;
    for (int r = 0; r < rounds; ++r) {
      for (auto [p, best] : {std::pair{&general_params, &best_general},
                             {&fast_params, &best_fast},
                             {&random_params, &best_random},
                             {&nucleus_params, &best_nucleus}}) {
        const auto start = Clock::now();
        for (int i = 0; i < rows; ++i) {
          SampleInput in{std::span<const float>(logits.data() + size_t(i) * vocab, vocab), p,
                         prompt, output, eos};
          check += sample_token(in, rng, scratch).token;
        }
        *best = std::min(*best, seconds_since(start) / rows);
      }
      const auto start = Clock::now();
      for (int i = 0; i < rows; ++i) {
        std::memcpy(copy.data(), logits.data() + size_t(i) * vocab, vocab * sizeof(float));
        check += int64_t(copy[size_t(i) % vocab] > 0);
      }
      best_copy = std::min(best_copy, seconds_since(start) / rows);
    }
    const double bytes = double(vocab) * sizeof(float);
    std::printf("| %zu | %d | %.1f | %.1f | %.2fx | %.1f | %.1f | %.1f | %.1f |\n", vocab, rows,
                best_general * 1e6, best_fast * 1e6, best_general / best_fast,
                bytes / best_fast / 1e9, 2 * bytes / best_copy / 1e9, best_random * 1e6,
                best_nucleus * 1e6);
    if (check == 42) std::printf(" ");  // keeps the work observable
  }
}
