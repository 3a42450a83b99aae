// The prefill path on block weights (cpu_linear_sgemm.cc: weight panels dequantized to fp32,
// OpenBLAS sgemm) against the integer kernels (the same backend with the switch off), which
// cpu_quant_kernels_test checks against the fp32 oracle. For quantized formats both paths
// multiply the decoded weights by the same 8-bit activations (x~ = d q per 32 values); for
// F16/BF16 both take x as it is. So they differ only by fp32 rounding, in different orders:
// per output |got - ref| <= K 2^-22 sum_i |w_i x~_i| (generous). A path that skipped the
// activation rounding would differ by up to d/2 per value (far above this bound). Run for
// every block format, token counts around the switch (sgemm_min_rows) and across several
// weight panels, with a bias, on 1 and 3 threads; below the switch the op must be the
// integer kernels exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/common/half.h"
#include "relayllm/formats/gguf_dequant.h"
#include "relayllm/model/gguf_model.h"
#include "relayllm/model/weight_quantization.h"

namespace relayllm {
namespace {

// Weights of every format from one fp32 matrix: Q8_0 by the load-time quantizer, the 16-bit
// formats by rounding, the 4-bit and K formats as random valid blocks (their layout is what
// matters to the panel decoder, tested bit for bit in cpu_quant_kernels_test).
std::vector<std::byte> blocks_of(WeightFormat f, const std::vector<float>& w, std::mt19937& rng) {
  if (f == WeightFormat::kQ8_0) return quantize_q8_0(w);
  std::vector<std::byte> out;
  if (f == WeightFormat::kF16 || f == WeightFormat::kBF16) {
    out.resize(w.size() * 2);
    for (size_t i = 0; i < w.size(); ++i) {
      const uint16_t h = f == WeightFormat::kF16 ? float_to_fp16(w[i]) : float_to_bf16(w[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
    return out;
  }
  const WeightBlockLayout layout = weight_block_layout(f);
  out.resize(w.size() / size_t(layout.block_elements) * size_t(layout.block_bytes));
  for (auto& b : out) b = std::byte(rng() & 0xff);
  // Sane fp16 scales (random bytes there would be huge or NaN): d (and dmin) at the
  // front of Q4_0/Q4_1/Q4_K/Q5_K blocks, d at the end of Q6_K's.
  const uint16_t d = float_to_fp16(0.01f), m = float_to_fp16(0.005f);
  for (size_t b = 0; b < out.size(); b += size_t(layout.block_bytes)) {
    if (f == WeightFormat::kQ6_K) {
      std::memcpy(out.data() + b + 208, &d, 2);
      continue;
    }
    std::memcpy(out.data() + b, &d, 2);
    if (f != WeightFormat::kQ4_0) std::memcpy(out.data() + b + 2, &m, 2);
  }
  return out;
}

GgmlType ggml_type_of(WeightFormat f) {
  for (GgmlType t : {GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0, GgmlType::kQ4_0,
                     GgmlType::kQ4_1, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K})
    if (gguf_weight_format(t) == f) return t;
  ADD_FAILURE() << "no ggml type for " << weight_format_name(f);
  return GgmlType::kF32;
}

TEST(CpuSgemmPrefill, ManyRowsRunAsSgemmWithinFp32RoundingOfTheIntegerKernels) {
  CpuBackend probe(CpuBackendOptions{.num_threads = 1});
  if (probe.sgemm_min_rows() == 0) GTEST_SKIP() << "built without OpenBLAS";
  std::mt19937 rng(12);
  std::normal_distribution<float> normal;
  CpuBackend host(CpuBackendOptions{.num_threads = 1, .block_weights = false});
  CpuBackend reference(CpuBackendOptions{.num_threads = 1, .sgemm_min_rows = 0});
  for (int threads : {1, 3}) {
    CpuBackend backend(CpuBackendOptions{.num_threads = threads, .sgemm_min_rows = 16});
    for (WeightFormat f :
         {WeightFormat::kQ8_0, WeightFormat::kQ4_0, WeightFormat::kQ4_1, WeightFormat::kQ4_K,
          WeightFormat::kQ5_K, WeightFormat::kQ6_K, WeightFormat::kF16, WeightFormat::kBF16}) {
      const int64_t n = 150, k = 512;  // 150 rows: two full panels of 64 and a partial one
      std::vector<float> w0(size_t(n * k));
      for (float& v : w0) v = normal(rng) * 0.05f;
      const std::vector<std::byte> bytes = blocks_of(f, w0, rng);
      std::vector<float> w(w0.size());
      const int64_t be = weight_block_layout(f).block_elements;
      dequantize_blocks(ggml_type_of(f), bytes, 0, size_t(n * k / be), w.data());
      Tensor wq = backend.upload_blocks(f, bytes, {n, k});
      Tensor wf = reference.upload_blocks(f, bytes, {n, k});
      const bool quantized = f != WeightFormat::kF16 && f != WeightFormat::kBF16;
      std::vector<float> bias_host(static_cast<size_t>(n));
      for (float& v : bias_host) v = normal(rng);
      Tensor bias = host.upload(bias_host, {n}, DType::kF32);
      for (int64_t t : {16, 17, 40}) {
        std::vector<float> xh(size_t(t * k));
        for (float& v : xh) v = normal(rng);
        Tensor x = host.upload(xh, {t, k}, DType::kF32);
        Tensor out = host.empty({t, n}, DType::kF32);
        Tensor want = host.empty({t, n}, DType::kF32);
        // x~: the activations both paths multiply (8-bit rounded for quantized formats).
        std::vector<float> xr = xh;
        if (quantized)
          for (int64_t r = 0; r < t; ++r) {
            std::vector<cpu_quant::ActBlock> a(static_cast<size_t>(k / 32));
            backend.kernels().quantize_row(xh.data() + r * k, k, a.data());
            for (int64_t i = 0; i < k; ++i)
              xr[size_t(r * k + i)] = a[size_t(i / 32)].d * float(a[size_t(i / 32)].qs[i % 32]);
          }
        std::fill(out.data<float>(), out.data<float>() + t * n, std::nanf(""));
        backend.linear(x, wq, &bias, out);
        reference.linear(x, wf, &bias, want);
        for (int64_t r = 0; r < t; ++r)
          for (int64_t j = 0; j < n; ++j) {
            double abs_dot = std::fabs(bias_host[size_t(j)]);
            for (int64_t i = 0; i < k; ++i)
              abs_dot += std::fabs(double(w[size_t(j * k + i)]) * xr[size_t(r * k + i)]);
            const double bound = double(k) * std::ldexp(1.0, -22) * abs_dot + 1e-30;
            ASSERT_LE(
                std::fabs(double(out.data<float>()[r * n + j]) - want.data<float>()[r * n + j]),
                bound)
                << weight_format_name(f) << " t=" << t << " threads " << threads << " row " << r
                << " col " << j;
          }
      }
    }
  }
}

TEST(CpuSgemmPrefill, FewRowsStayOnTheIntegerKernels) {
  CpuBackend sgemm(CpuBackendOptions{.num_threads = 1, .sgemm_min_rows = 16});
  if (sgemm.sgemm_min_rows() == 0) GTEST_SKIP() << "built without OpenBLAS";
  CpuBackend ints(CpuBackendOptions{.num_threads = 1, .sgemm_min_rows = 0});
  EXPECT_EQ(ints.sgemm_min_rows(), 0);
  std::mt19937 rng(13);
  std::normal_distribution<float> normal;
  const int64_t n = 8, k = 256;
  std::vector<float> w(size_t(n * k));
  for (float& v : w) v = normal(rng);
  const std::vector<std::byte> bytes = quantize_q8_0(w);
  Tensor a = sgemm.upload_blocks(WeightFormat::kQ8_0, bytes, {n, k});
  Tensor b = ints.upload_blocks(WeightFormat::kQ8_0, bytes, {n, k});
  for (int64_t t : {1, 15}) {
    std::vector<float> xh(size_t(t * k));
    for (float& v : xh) v = normal(rng);
    Tensor x = ints.upload(xh, {t, k}, DType::kF32);
    Tensor o1 = ints.empty({t, n}, DType::kF32), o2 = ints.empty({t, n}, DType::kF32);
    sgemm.linear(x, a, nullptr, o1);
    ints.linear(x, b, nullptr, o2);
    // Same kernels, same order: identical bits.
    EXPECT_EQ(std::memcmp(o1.data<float>(), o2.data<float>(), size_t(t * n) * 4), 0) << t;
  }
}

}  // namespace
}  // namespace relayllm
