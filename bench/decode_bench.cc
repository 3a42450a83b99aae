// End-to-end decode on the CUDA backend: one request (batch 1), greedy, through
// the engine built by the same factory as the CLI (so --gpu-memory-utilization
// sizes the KV pool); decode steps as CUDA graph replays, then the same request
// again op by op (--enforce-eager), and once more op by op with every op timed on the
// device (the op profile, printed as a table before the JSON line). Reports the median
// decode step against the floor (weight bytes + KV bytes) / copy bandwidth, the copy
// measured in the same run.
//
// Usage: decode_bench MODEL_DIR TOKENIZER_DIR [decode_steps] [prompt_tokens] [quantization]
// (MODEL_DIR holds config.json; weights are random: --load-format dummy; quantization as
// --quantization, e.g. fp8: the floor then counts one byte per linear weight).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "relayllm/backend/cuda/cuda_backend.h"
#include "relayllm/common/error.h"
#include "relayllm/serving/engine_builder.h"

namespace relayllm {
namespace {

int run(int argc, char** argv) {
  RELAYLLM_CHECK(argc >= 3,
                 "usage: decode_bench MODEL_DIR TOKENIZER_DIR [decode_steps] [prompt_tokens] "
                 "[quantization]");
  const int steps = argc > 3 ? std::stoi(argv[3]) : 128;
  const int prompt_len = argc > 4 ? std::stoi(argv[4]) : 32;
  const std::string quantization = argc > 5 ? argv[5] : "";
  // Measured before the engine takes the memory, on a backend of its own.
  const double bw = CudaBackend().measure_copy_bandwidth(size_t(2) << 30, 10);
  RELAYLLM_CHECK(bw > 0, "decode_bench: no room for two 2 GiB copy buffers");

  EngineOptions options;
  options.model = argv[1];
  options.tokenizer = argv[2];
  options.load_format = "dummy";
  options.device = "cuda";
  options.dtype = "bfloat16";
  options.gpu_memory_utilization = 0.9;
  options.quantization = quantization;
  options.op_profile = std::make_shared<OpProfile>();
  options.op_profile->set_recording(false);  // until the third run
  options.op_profile->set_copy_bandwidth(bw);
  auto t0 = std::chrono::steady_clock::now();
  ServingEngine serving = create_engine(options);
  Engine& engine = *serving.engine;
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::vector<int32_t> prompt;
  for (int i = 0; i < prompt_len; ++i) prompt.push_back(100 + 37 * i % 20000);
  // One request decoding `steps` tokens; the median step after the prefill (the
  // first graphed step of a bucket also captures it, so medians, not means).
  auto decode_median = [&](std::vector<double>& sorted) {
    SamplingParams params;
    params.temperature = 0;
    params.max_tokens = steps + 1;
    params.ignore_eos = true;
    engine.add_request(prompt, params);
    std::vector<double> step_ms;
    while (engine.has_unfinished()) {
      auto a = std::chrono::steady_clock::now();
      engine.step();  // returns after the logits reached the host
      step_ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
    }
    sorted.assign(step_ms.begin() + 1, step_ms.end());
    std::sort(sorted.begin(), sorted.end());
    return sorted[sorted.size() / 2];
  };
  std::vector<double> decode, eager_steps;
  const int64_t graph_steps_before = engine.stats().graph_steps;
  const double med = decode_median(decode);
  const int64_t graph_steps = engine.stats().graph_steps - graph_steps_before;
  engine.set_enforce_eager(true);
  const double eager_med = decode_median(eager_steps);
  std::vector<double> profiled_steps;
  options.op_profile->set_recording(true);
  const double profiled_med = decode_median(profiled_steps);
  options.op_profile->set_recording(false);
  std::printf("%s\n", options.op_profile->table(StepKind::kDecode).c_str());

  const ModelConfig& c = engine.model_config();
  const double elem = 2;
  // fp8: the decoder layers' linear weights are one byte each (their per-row scales are noise).
  const double linear_elem = quantization == "fp8" ? 1 : elem;
  const double linears = double(c.hidden_size) * (c.num_heads + 2 * c.num_kv_heads) * c.head_dim +
                         double(c.num_heads) * c.head_dim * c.hidden_size +
                         3.0 * c.hidden_size * c.intermediate_size;
  const double per_layer = linear_elem * linears + elem * 2.0 * c.hidden_size;
  const double weight_bytes =
      per_layer * c.num_layers + elem * (double(c.vocab_size) * c.hidden_size + c.hidden_size);
  const double mean_ctx = prompt_len + steps / 2.0;
  const double kv_bytes = elem * 2.0 * c.num_layers * mean_ctx * c.num_kv_heads * c.head_dim;
  const double floor_ms = (weight_bytes + kv_bytes) / bw * 1e3;
  std::printf(
      "{\"kind\": \"decode\", \"quantization\": \"%s\", \"load_s\": %.1f, \"kv_blocks\": %d, "
      "\"block_size\": %d, \"steps\": "
      "%zu, "
      "\"prompt\": %d, \"median_step_ms\": %.3f, \"p10_ms\": %.3f, \"p90_ms\": %.3f, "
      "\"weight_gb\": %.3f, \"kv_gb_mean\": %.4f, \"copy_bw_gbs\": %.1f, \"floor_ms\": %.3f, "
      "\"fraction_of_floor\": %.3f, \"graph_steps\": %lld, \"eager_median_step_ms\": %.3f, "
      "\"eager_fraction_of_floor\": %.3f, \"profiled_median_step_ms\": %.3f}\n",
      quantization.empty() ? "none" : quantization.c_str(), load_s, engine.config().num_kv_blocks,
      engine.config().block_size, decode.size(), prompt_len, med, decode[decode.size() / 10],
      decode[decode.size() * 9 / 10], weight_bytes / 1e9, kv_bytes / 1e9, bw / 1e9, floor_ms,
      floor_ms / med, (long long)graph_steps, eager_med, floor_ms / eager_med, profiled_med);
  return 0;
}

}  // namespace
}  // namespace relayllm

int main(int argc, char** argv) {
  try {
    return relayllm::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "decode_bench: %s\n", e.what());
    return 1;
  }
}
