// FP8 weights on the CUDA backend (sm_89+): the activation quantizer against the host's
// e4m3 conversion bit for bit, the FP8 linear op against the CPU reference (both scale paths:
// cuBLASLt's outer-vector scales and the unit-scale GEMM with the rescale epilogue), and the
// whole model with FP8 weights against the CPU's FP8 reference and the bf16 GPU model.
//
// Bounds.
// - Linear op vs CPU reference (kFp8OpBound 1e-2): both quantize the same bf16 inputs with
//   the same scales to the same codes (checked bit for bit below), and e4m3 products are exact
//   in fp32; what is left is the order of the fp32 sums and the bf16 rounding of the output
//   (2^-9 = 2e-3 relative per element).
// - Model vs the CPU FP8 reference (kFp8ModelVsCpuBound 0.15): the GPU stores activations in
//   bf16 before quantizing them, so an activation whose bf16 rounding (2^-9) crosses an e4m3
//   rounding boundary (steps of 2^-4 to 2^-3, relative) lands on the neighbouring code: 1 in
//   16-32 activations moves by one step, an RMS change of about sqrt(1/32) * 2^-3.5 = 1.6e-2
//   per op. The fixtures amplify a per-op input error about 6x on the logits (measured with
//   Q8_0 in hf_logits_blocks_test): 9.4e-2, plus the 3e-2 the bf16 model has against the CPU
//   (cuda_model_test.cc); rounded up to 0.15.
// - Model vs the bf16 GPU model (kFp8ModelVsBf16Bound 0.3): the CPU test's bound for FP8 vs fp32
//   (tests/unit/fp8_test.cc: 2^-4 / sqrt(3) per value, sqrt(2) per op, 6x amplification = 0.31)
//   and bf16's own 3e-2 are far apart, so the FP8 bound stands. A quantizer that loses a scale or
//   decodes wrong codes is off by O(1); one that does not quantize at all is caught by the lower
//   bound (kFp8ModelMinError: FP8 must differ from bf16).
#include "relayllm/backend/cuda/cuda_fp8.cuh"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <random>
#include <string>

#include "../common/paged_forward.h"
#include "gpu_op_test_util.h"
#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/backend/cuda/cuda_backend.h"
#include "relayllm/backend/fp8_weight.h"
#include "relayllm/common/fp8.h"
#include "relayllm/common/half.h"
#include "relayllm/model/llama_model.h"
#include "relayllm/model/model_config.h"
#include "relayllm/model/model_weights.h"
#include "relayllm/model/weight_quantization.h"

namespace relayllm {
namespace {

using testing::fixture_dir;
using testing::random_bf16;
using testing::relative_error;
using testing::run_paged;

constexpr double kFp8OpBound = 1e-2;
constexpr double kFp8ModelVsCpuBound = 0.15;
constexpr double kFp8ModelVsBf16Bound = 0.3;
constexpr double kFp8ModelMinError = 1e-3;

bool gpu_has_fp8() { return CudaBackend().supports_weight_format(WeightFormat::kFP8); }

TEST(CudaFp8, ActivationCodesMatchTheHostBitForBit) {
  if (!gpu_has_fp8()) GTEST_SKIP() << "no FP8 tensor cores on this GPU";
  CudaBackend gpu;
  std::mt19937_64 rng(7);
  const int64_t rows = 9, k = 4096;
  // Rows of very different magnitudes (so scales reach e4m3's subnormals), one all-zero row.
  std::vector<float> x;
  for (int64_t r = 0; r < rows; ++r) {
    auto row = random_bf16(rng, size_t(k), std::ldexp(1.0f, int(r) * 3 - 12));
    if (r == 4) std::fill(row.begin(), row.end(), 0.0f);
    x.insert(x.end(), row.begin(), row.end());
  }
  Tensor gx = gpu.upload(x, {rows, k}, DType::kBF16);
  for (float static_scale : {0.0f, 0.0123f}) {
    uint8_t* codes = nullptr;
    float *scales = nullptr, *sscale = nullptr;
    ASSERT_EQ(cudaMalloc(&codes, size_t(rows * k)), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&scales, size_t(rows) * 4), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&sscale, 4), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(sscale, &static_scale, 4, cudaMemcpyHostToDevice), cudaSuccess);
    gpu.synchronize();
    cuda::launch_quantize_fp8_rows(DType::kBF16, gx.storage.get(), rows, k, sscale, codes, scales,
                                   static_cast<cudaStream_t>(gpu.stream()));
    gpu.synchronize();
    std::vector<uint8_t> got(size_t(rows * k));
    std::vector<float> got_scales(static_cast<size_t>(rows));
    ASSERT_EQ(cudaMemcpy(got.data(), codes, got.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(got_scales.data(), scales, 4 * size_t(rows), cudaMemcpyDeviceToHost),
              cudaSuccess);
    int64_t mismatches = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = x.data() + r * k;
      float scale = static_scale;
      if (scale == 0) {
        float absmax = 0;
        for (int64_t i = 0; i < k; ++i) absmax = std::max(absmax, std::fabs(row[i]));
        scale = fp8_dynamic_scale(absmax);
      }
      EXPECT_EQ(got_scales[size_t(r)], scale) << "row " << r;
      std::vector<uint8_t> want(static_cast<size_t>(k));
      fp8_quantize_row(row, k, scale, want.data());
      for (int64_t i = 0; i < k; ++i) mismatches += got[size_t(r * k + i)] != want[size_t(i)];
    }
    EXPECT_EQ(mismatches, 0) << "static scale " << static_scale;
    cudaFree(codes);
    cudaFree(scales);
    cudaFree(sscale);
  }
}

// The host's e4m3 conversion (common/fp8.h) against CUDA's __nv_cvt_float_to_fp8 (satfinite)
// on the values where conversions go wrong: every tie between neighbouring codes and the
// floats next to it, the saturation edge, infinities, NaN, subnormals and random floats over
// 40 binades. The kernel with a static scale of 1 converts its fp32 input as it is.
TEST(CudaFp8, HostConversionMatchesCudasOnEdgeCases) {
  if (!gpu_has_fp8()) GTEST_SKIP() << "no FP8 tensor cores on this GPU";
  std::vector<float> x;
  for (int c = 0; c < 0x7e; ++c)
    for (float sign : {1.0f, -1.0f}) {
      const float a = e4m3_to_float(uint8_t(c)), b = e4m3_to_float(uint8_t(c + 1));
      const float mid = (a + b) / 2;
      for (float v : {a, mid, std::nextafter(mid, a), std::nextafter(mid, b)})
        x.push_back(sign * v);
    }
  for (float v : {448.0f, 449.0f, 463.99f, 464.0f, 465.0f, 1e9f, 3e38f,
                  std::numeric_limits<float>::infinity(), std::numeric_limits<float>::denorm_min(),
                  std::ldexp(1.0f, -10), std::ldexp(1.5f, -10), std::ldexp(1.0f, -11), 0.0f})
    for (float sign : {1.0f, -1.0f}) x.push_back(sign * v);
  std::mt19937_64 rng(21);
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  for (int i = 0; i < 20000; ++i)
    x.push_back((i % 2 ? -1.0f : 1.0f) * std::ldexp(mant(rng), int(rng() % 40) - 30));
  const size_t nan_at = x.size();
  x.push_back(std::numeric_limits<float>::quiet_NaN());
  CudaBackend gpu;
  const int64_t k = int64_t(x.size());
  Tensor gx = gpu.upload(x, {1, k}, DType::kF32);
  uint8_t* codes = nullptr;
  float *scales = nullptr, *one = nullptr;
  const float unit = 1.0f;
  ASSERT_EQ(cudaMalloc(&codes, size_t(k)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&scales, 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&one, 4), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(one, &unit, 4, cudaMemcpyHostToDevice), cudaSuccess);
  gpu.synchronize();
  cuda::launch_quantize_fp8_rows(DType::kF32, gx.storage.get(), 1, k, one, codes, scales,
                                 static_cast<cudaStream_t>(gpu.stream()));
  gpu.synchronize();
  std::vector<uint8_t> got(static_cast<size_t>(k));
  ASSERT_EQ(cudaMemcpy(got.data(), codes, got.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  int64_t mismatches = 0;
  for (size_t i = 0; i < nan_at; ++i)
    if (got[i] != float_to_e4m3(x[i]) && ++mismatches <= 10)
      ADD_FAILURE() << "x=" << x[i] << " cuda " << int(got[i]) << " host "
                    << int(float_to_e4m3(x[i]));
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ(got[nan_at] & 0x7f, 0x7f) << "NaN";
  cudaFree(codes);
  cudaFree(scales);
  cudaFree(one);
}

TEST(CudaFp8, LinearMatchesTheCpuReferenceOnBothScalePaths) {
  if (!gpu_has_fp8()) GTEST_SKIP() << "no FP8 tensor cores on this GPU";
  CpuBackend cpu(4);
  // The fused quantize + gemv kernel for up to 4 rows (the default), the quantize kernel then
  // the gemv kernel, cuBLASLt with outer-vector scales, and the unit-scale GEMM with the
  // rescale kernel.
  CudaBackend fused;
  CudaBackend gemv{CudaBackendOptions{.fp8_fused_gemv = false}};
  CudaBackend outer{CudaBackendOptions{.fp8_gemv_max_tokens = 0}};
  CudaBackend unit{CudaBackendOptions{.fp8_outer_vector_scales = false, .fp8_gemv_max_tokens = 0}};
  std::mt19937_64 rng(11);
  struct Shape {
    int64_t t, n, k;
  };
  for (Shape s : {Shape{1, 256, 128}, Shape{2, 304, 208}, Shape{3, 64, 16}, Shape{4, 512, 1024},
                  Shape{37, 304, 208}, Shape{130, 512, 1024}, Shape{1, 11008, 4096},
                  Shape{16, 4096, 11008}, Shape{4, 64, 12288}}) {
    auto x = random_bf16(rng, size_t(s.t * s.k), 1.0f);
    auto w = random_bf16(rng, size_t(s.n * s.k), 0.05f);
    auto b = random_bf16(rng, size_t(s.n), 1.0f);
    const std::vector<std::byte> w8 = quantize_fp8_weight(w, s.n, s.k);
    Tensor cw = cpu.upload_blocks(WeightFormat::kFP8, w8, {s.n, s.k});
    Tensor cx = cpu.upload(x, {s.t, s.k}, DType::kF32), cb = cpu.upload(b, {s.n}, DType::kF32);
    for (bool with_bias : {false, true}) {
      Tensor cout = cpu.empty({s.t, s.n}, DType::kF32);
      cpu.linear(cx, cw, with_bias ? &cb : nullptr, cout);
      std::vector<float> want(size_t(s.t * s.n));
      cpu.download(cout, want);
      for (CudaBackend* gpu : {&fused, &gemv, &outer, &unit}) {
        Tensor gw = gpu->upload_blocks(WeightFormat::kFP8, w8, {s.n, s.k});
        Tensor gx = gpu->upload(x, {s.t, s.k}, DType::kBF16);
        Tensor gb = gpu->upload(b, {s.n}, DType::kBF16);
        std::vector<float> nan(size_t(s.t * s.n), std::numeric_limits<float>::quiet_NaN());
        Tensor gout = gpu->upload(nan, {s.t, s.n}, DType::kBF16);
        gpu->linear(gx, gw, with_bias ? &gb : nullptr, gout);
        std::vector<float> got(want.size());
        gpu->download(gout, got);
        const std::string path = gpu->last_fp8_path();
        const double err = relative_error(got, want);
        EXPECT_LT(err, kFp8OpBound) << "t=" << s.t << " n=" << s.n << " k=" << s.k
                                    << " bias=" << with_bias << " path=" << path;
        if (gpu == &unit) EXPECT_EQ(path, "unit+rescale");
        // Fused where the rows' codes fit 47 KiB of shared memory.
        if (gpu == &fused && s.t <= 4)
          EXPECT_EQ(path, s.t * s.k <= 47 * 1024 ? "fused-gemv" : "gemv");
        if (gpu == &gemv) EXPECT_EQ(path, s.t <= 4 ? "gemv" : path);
        if (gpu != &gemv && gpu != &fused) EXPECT_NE(path, "gemv");
        if (s.t > 4) EXPECT_TRUE(path == "outer-vector" || path == "unit+rescale") << path;
        if (!with_bias)
          std::printf("[fp8] linear t=%lld n=%lld k=%lld %s: rel err vs cpu %.2e\n", (long long)s.t,
                      (long long)s.n, (long long)s.k, path.c_str(), err);
      }
      // float32 output (the logits' path): without bias.
      if (!with_bias)
        for (CudaBackend* gpu : {&gemv, &outer}) {  // fused: x's dtype out only
          Tensor gw = gpu->upload_blocks(WeightFormat::kFP8, w8, {s.n, s.k});
          Tensor gx = gpu->upload(x, {s.t, s.k}, DType::kBF16);
          Tensor gout = gpu->empty({s.t, s.n}, DType::kF32);
          gpu->linear(gx, gw, nullptr, gout);
          std::vector<float> got(want.size());
          gpu->download(gout, got);
          EXPECT_LT(relative_error(got, want), kFp8OpBound / 4)
              << "fp32 out t=" << s.t << " " << gpu->last_fp8_path();
        }
    }
  }
}

TEST(CudaFp8, StaticInputScaleIsApplied) {
  if (!gpu_has_fp8()) GTEST_SKIP() << "no FP8 tensor cores on this GPU";
  CpuBackend cpu(4);
  CudaBackend gpu;
  std::mt19937_64 rng(13);
  const int64_t n = 64, k = 256;
  auto w = random_bf16(rng, size_t(n * k), 0.05f);
  const std::vector<std::byte> dyn = quantize_fp8_weight(w, n, k);
  const Fp8WeightView v = fp8_weight_view(dyn.data(), n, k);
  std::vector<uint8_t> codes(v.codes, v.codes + n * k);
  std::vector<float> scales(v.scales, v.scales + n);
  // A static scale that clips the largest activations (saturation at 448 on both sides).
  const std::vector<std::byte> w8 = pack_fp8_weight(codes, scales, n, k, 3.0f / 448.0f);
  for (int64_t t : {2, 5}) {  // the fused decode kernel and cuBLASLt
    auto x = random_bf16(rng, size_t(t * k), 1.0f);
    Tensor cout = cpu.empty({t, n}, DType::kF32);
    cpu.linear(cpu.upload(x, {t, k}, DType::kF32),
               cpu.upload_blocks(WeightFormat::kFP8, w8, {n, k}), nullptr, cout);
    Tensor gout = gpu.empty({t, n}, DType::kBF16);
    gpu.linear(gpu.upload(x, {t, k}, DType::kBF16),
               gpu.upload_blocks(WeightFormat::kFP8, w8, {n, k}), nullptr, gout);
    std::vector<float> want(size_t(t * n)), got(want.size());
    cpu.download(cout, want);
    gpu.download(gout, got);
    EXPECT_LT(relative_error(got, want), kFp8OpBound) << "t=" << t << " " << gpu.last_fp8_path();
  }
}

TEST(CudaFp8, ModelLogitsAgainstCpuReferenceAndBf16) {
  if (!gpu_has_fp8()) GTEST_SKIP() << "no FP8 tensor cores on this GPU";
  for (const char* name : {"llama2", "qwen2", "qwen3"}) {
    ModelConfig config = parse_model_config(fixture_dir(name) / "config.json");
    ModelWeights weights = load_weights(fixture_dir(name), config);
    ModelWeights fp8 = weights;
    ASSERT_GT(quantize_weights(fp8, config, LoadQuantization::kFP8), 0u);
    CudaBackend gpu;
    CpuBackend cpu(2);
    LlamaModel gpu_bf16(config, weights, gpu, config.max_position_embeddings);
    LlamaModel gpu_fp8(config, fp8, gpu, config.max_position_embeddings);
    LlamaModel cpu_fp8(config, fp8, cpu, config.max_position_embeddings);
    std::mt19937_64 rng(3);
    std::vector<int32_t> tokens(40);
    for (auto& t : tokens) t = int32_t(3 + rng() % uint64_t(config.vocab_size - 3));
    double worst_cpu = 0, worst_bf16 = 0, least_bf16 = 1e9;
    for (auto [prefix, chunk] : {std::pair{0, 40}, std::pair{0, 1}, std::pair{9, 1}}) {
      auto got = run_paged(gpu_fp8, tokens, prefix, chunk);
      auto ref = run_paged(cpu_fp8, tokens, prefix, chunk);
      auto bf16 = run_paged(gpu_bf16, tokens, prefix, chunk);
      for (size_t r = 0; r < got.size(); ++r) {
        const double e_cpu = relative_error(got[r], ref[r]);
        const double e_bf16 = relative_error(got[r], bf16[r]);
        worst_cpu = std::max(worst_cpu, e_cpu);
        worst_bf16 = std::max(worst_bf16, e_bf16);
        least_bf16 = std::min(least_bf16, e_bf16);
        EXPECT_LT(e_cpu, kFp8ModelVsCpuBound) << name << " row " << r << " chunk " << chunk;
        EXPECT_LT(e_bf16, kFp8ModelVsBf16Bound) << name << " row " << r << " chunk " << chunk;
      }
    }
    EXPECT_GT(least_bf16, kFp8ModelMinError) << name << ": FP8 logits equal bf16 ones";
    std::printf(
        "[fp8] %s: worst relative logit error vs cpu fp8 reference %.2e, vs bf16 gpu "
        "%.2e (least %.2e)\n",
        name, worst_cpu, worst_bf16, least_bf16);
  }
}

// The point of FP8 weights: the device holds one byte per linear weight and no 16-bit copy.
// Measured as the device memory a model takes (free memory before and after), Llama-2-7B's
// shapes with two layers: the linear weights drop from 2 to 1 byte (+ 4 bytes per row),
// the embedding and lm_head stay bf16.
TEST(CudaFp8, WeightMemoryOfTheLinearsHalves) {
  if (!gpu_has_fp8()) GTEST_SKIP() << "no FP8 tensor cores on this GPU";
  ModelConfig config = parse_model_config(std::filesystem::path(RELAYLLM_SOURCE_DIR) /
                                          "bench/configs/llama2-7b/config.json");
  config.num_layers = 2;
  ModelWeights weights = make_dummy_weights(config, 1);
  ModelWeights fp8 = weights;
  ASSERT_EQ(quantize_weights(fp8, config, LoadQuantization::kFP8), 14u);
  CudaBackend gpu;
  // free_memory() gives the pool's cached blocks back first, so memory freed while loading
  // (the q/k/v and gate/up parts once stacked) does not count as taken.
  auto held = [&](const ModelWeights& w) {
    const size_t before = gpu.free_memory();
    auto model = std::make_unique<LlamaModel>(config, w, gpu, 64);
    gpu.synchronize();
    const double bytes = double(before) - double(gpu.free_memory());
    model.reset();
    gpu.synchronize();
    return bytes;
  };
  const double linears =
      double(config.num_layers) * (4.0 * config.hidden_size * config.hidden_size +
                                   3.0 * config.hidden_size * config.intermediate_size);
  const double rest = 2.0 * 2.0 * double(config.vocab_size) * config.hidden_size;
  const double bf16 = held(weights), f8 = held(fp8);
  std::printf(
      "[fp8] device memory of Llama-2-7B's shapes with 2 layers: bf16 %.3f GB, fp8 %.3f "
      "GB (expected %.3f and %.3f)\n",
      bf16 / 1e9, f8 / 1e9, (2 * linears + rest) / 1e9, (linears + rest) / 1e9);
  EXPECT_NEAR(bf16, 2 * linears + rest, 0.05 * (2 * linears + rest));
  EXPECT_NEAR(f8, linears + rest, 0.05 * (linears + rest));
}

}  // namespace
}  // namespace relayllm
