// End-to-end decode on the CUDA backend: `batch` requests decoding together, greedy,
// through the engine built by the same factory as the CLI (so --gpu-memory-utilization
// sizes the KV pool); decode steps as CUDA graph replays, then the same requests again
// op by op (--enforce-eager), and once more op by op with every op timed on the device
// (the op profile, printed as a table before the JSON line). Reports the median decode
// step against the floor (weight bytes + KV bytes) / copy bandwidth, the copy measured
// in the same run.
//
// Usage: decode_bench MODEL_DIR TOKENIZER_DIR [decode_steps] [prompt_tokens] [batches]
//        [modes]
// MODEL_DIR holds config.json; weights are random (--load-format dummy). `batches` is a
// comma list of batch sizes (default 1), `modes` a comma list of kernel configurations
// run one after the other on the one loaded model (default "new"):
//   new      the backend as configured (skinny decode GEMM, fused rope + write_kv,
//            register-resident norms)
//   skinnyN  the same with the skinny kernel taking up to N rows (N <= 32)
//   pdl      new, with the skinny GEMM launched as a programmatic dependent (sm_90)
//   pageable new, with the logits copied into pageable memory (no pinned bounce buffer)
//   cublas   cuBLASLt for every projection, rope and write_kv as two kernels, the norms'
//            loop kernels, logits copied into pageable memory (the step before these changes)
// Weights are stacked at load unless RELAYLLM_CUDA_FUSE_WEIGHTS=0 (then `cublas` is the
// step as it was before either change); the JSON line repeats the switches.
// A 7th argument is the --quantization value, e.g. fp8 (FP8 linear weights are never
// stacked; the floor then counts one byte per linear weight).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "bench_main.h"
#include "cuda_device.h"
#include "relayllm/backend/cuda/cuda_backend.h"
#include "relayllm/backend/profiling_backend.h"
#include "relayllm/common/error.h"
#include "relayllm/serving/engine_builder.h"

namespace relayllm {
namespace {

const char* env_or(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "default";
}

std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

int run(int argc, char** argv) {
  RELAYLLM_CHECK(argc >= 3,
                 "usage: decode_bench MODEL_DIR TOKENIZER_DIR [decode_steps] [prompt_tokens] "
                 "[batches] [modes] [quantization]");
  const int steps = argc > 3 ? std::stoi(argv[3]) : 128;
  const int prompt_len = argc > 4 ? std::stoi(argv[4]) : 32;
  std::vector<int> batches;
  for (const std::string& b : split(argc > 5 ? argv[5] : "1")) batches.push_back(std::stoi(b));
  const std::vector<std::string> modes = split(argc > 6 ? argv[6] : "new");
  const std::string quantization = argc > 7 ? argv[7] : "";
  RELAYLLM_CHECK(steps >= 2 && prompt_len >= 1, "decode_bench: steps {} (>= 2), prompt tokens {}",
                 steps, prompt_len);
  for (int b : batches) RELAYLLM_CHECK(b >= 1 && b <= 256, "decode_bench: batch {} (1..256)", b);
  auto mode_rows = [](const std::string& m, int32_t configured) {
    if (m == "new" || m == "pdl" || m == "pageable") return configured;
    if (m == "cublas") return 0;
    RELAYLLM_CHECK(m.rfind("skinny", 0) == 0 && m.size() > 6 &&
                       m.find_first_not_of("0123456789", 6) == std::string::npos,
                   "decode_bench: mode '{}' (new, skinnyN, pdl, pageable or cublas)", m);
    return int32_t(std::stoi(m.substr(6)));
  };
  for (const std::string& m : modes) mode_rows(m, 0);
  // Measured before the engine takes the memory, on a backend of its own.
  const double bw = [] {
    CudaBackend copy_backend;  // gone before the engine is built
    return bench::copy_bandwidth(copy_backend, "decode_bench", size_t(2) << 30, 10);
  }();

  EngineOptions options;
  options.model = argv[1];
  options.tokenizer = argv[2];
  options.load_format = "dummy";
  options.device = "cuda";
  options.dtype = "bfloat16";
  options.gpu_memory_utilization = 0.9;
  options.quantization = quantization;
  options.op_profile = std::make_shared<OpProfile>();
  options.op_profile->set_recording(false);  // only in the third run of each configuration
  options.op_profile->set_copy_bandwidth(bw);
  auto t0 = std::chrono::steady_clock::now();
  ServingEngine serving = create_engine(options);
  Engine& engine = *serving.engine;
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto* profiling = dynamic_cast<ProfilingBackend*>(&engine.backend());
  auto* cuda = dynamic_cast<CudaBackend*>(profiling ? &profiling->inner() : &engine.backend());
  RELAYLLM_CHECK(cuda != nullptr, "decode_bench: the engine does not run on the cuda backend");
  const int32_t configured_rows = cuda->skinny_gemm_rows();

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

  for (int batch : batches) {
    // Distinct prompts, so no request reads another's cached blocks.
    std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(batch));
    for (int r = 0; r < batch; ++r)
      for (int i = 0; i < prompt_len; ++i) prompts[r].push_back(100 + (37 * i + 911 * r) % 20000);
    // `batch` requests decoding `steps` tokens each; the median of the steps that decoded
    // the whole batch (the first graphed step of a bucket also captures it: medians).
    auto decode_median = [&](std::vector<double>& sorted) {
      SamplingParams params;
      params.temperature = 0;
      params.max_tokens = steps + 1;
      params.ignore_eos = true;
      std::vector<int64_t> ids;
      for (const auto& prompt : prompts) ids.push_back(engine.add_request(prompt, params));
      std::vector<double> full;
      while (engine.has_unfinished()) {
        const EngineStats before = engine.stats();
        auto a = std::chrono::steady_clock::now();
        engine.step();  // returns after the logits reached the host
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count();
        const EngineStats& after = engine.stats();
        if (after.decode_steps == before.decode_steps + 1 &&
            after.generation_tokens == before.generation_tokens + batch)
          full.push_back(ms);
      }
      for (int64_t id : ids) engine.release(id);
      RELAYLLM_CHECK(full.size() >= 2, "decode_bench: only {} steps decoded the whole batch",
                     full.size());
      sorted = full;
      std::sort(sorted.begin(), sorted.end());
      return sorted[sorted.size() / 2];
    };
    const double kv_bytes =
        batch * elem * 2.0 * c.num_layers * mean_ctx * c.num_kv_heads * c.head_dim;
    const double floor_ms = (weight_bytes + kv_bytes) / bw * 1e3;

    for (const std::string& mode : modes) {
      cuda->set_skinny_gemm_rows(mode_rows(mode, configured_rows));
      cuda->set_decode_row_kernels(mode != "cublas");
      cuda->set_programmatic_launch(mode == "pdl");
      cuda->set_pinned_download(mode != "cublas" && mode != "pageable");
      engine.set_enforce_eager(false);
      std::vector<double> decode, eager_steps, profiled_steps;
      const int64_t graph_steps_before = engine.stats().graph_steps;
      const double med = decode_median(decode);
      const int64_t graph_steps = engine.stats().graph_steps - graph_steps_before;
      engine.set_enforce_eager(true);
      const double eager_med = decode_median(eager_steps);
      options.op_profile->clear();
      options.op_profile->set_recording(true);
      const double profiled_med = decode_median(profiled_steps);
      options.op_profile->set_recording(false);
      std::printf("\n%s / batch %d / %s:\n%s\n", argv[1], batch, mode.c_str(),
                  options.op_profile->table(StepKind::kDecode).c_str());
      std::printf(
          "{\"kind\": \"decode\", \"model\": \"%s\", \"quantization\": \"%s\", \"batch\": %d, "
          "\"mode\": \"%s\", "
          "\"skinny_gemm_rows\": %d, \"fuse_weights\": \"%s\", \"load_s\": %.1f, "
          "\"kv_blocks\": %d, \"block_size\": %d, \"steps\": %zu, \"prompt\": %d, "
          "\"median_step_ms\": %.3f, \"p10_ms\": %.3f, \"p90_ms\": %.3f, \"weight_gb\": %.3f, "
          "\"kv_gb_mean\": %.4f, \"copy_bw_gbs\": %.1f, \"floor_ms\": %.3f, "
          "\"fraction_of_floor\": %.3f, \"graph_steps\": %lld, \"eager_median_step_ms\": %.3f, "
          "\"eager_fraction_of_floor\": %.3f, \"profiled_median_step_ms\": %.3f}\n",
          argv[1], quantization.empty() ? "none" : quantization.c_str(), batch, mode.c_str(),
          cuda->skinny_gemm_rows(), env_or("RELAYLLM_CUDA_FUSE_WEIGHTS"), load_s,
          engine.config().num_kv_blocks, engine.config().block_size, decode.size(), prompt_len, med,
          decode[decode.size() / 10], decode[decode.size() * 9 / 10], weight_bytes / 1e9,
          kv_bytes / 1e9, bw / 1e9, floor_ms, floor_ms / med, (long long)graph_steps, eager_med,
          floor_ms / eager_med, profiled_med);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace relayllm

int main(int argc, char** argv) {
  return relayllm::bench::run_main("decode_bench", [&] { return relayllm::run(argc, argv); });
}
