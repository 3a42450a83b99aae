// The CPU backend's block-format kernels against the fp32 oracle: random weight blocks of
// every format, dequantized by formats/gguf_dequant (an independent decoder written from the
// same format description), dotted in fp64 with fp32 activations. Every kernel table this
// CPU can run is tested (portable, avx2, avx512vnni: see usable_quant_kernels).
//
// Error bounds, per output y = sum_i w_i x_i:
// - Quantized formats: the kernels dot the exact weights with x quantized per block of 32
//   (x_i = d_b q_i + e_i, |e_i| <= d_b / 2, d_b = max|x in b| / 127), in exact integer sums
//   and fp32 scaling. So |y - ref| <= sum_b (d_b / 2) sum_{i in b} |w_i| (the quantization
//   error, a hard bound) plus fp32 rounding of the scaled block sums, bounded by
//   K * 2^-22 * sum |w_i x_i| (generous: a few roundings per block, each <= 2^-24 relative).
// - F16/BF16 weights: fp32 products and sums only: the rounding term alone.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/backend/cpu/quant_dequant.h"
#include "relayllm/backend/cpu/quant_dispatch.h"
#include "relayllm/common/error.h"
#include "relayllm/common/half.h"
#include "relayllm/formats/gguf_dequant.h"
#include "relayllm/model/gguf_model.h"

namespace relayllm {
namespace {

using cpu_quant::ActBlock;
using cpu_quant::QuantKernels;

const WeightFormat kFormats[] = {WeightFormat::kQ8_0, WeightFormat::kQ4_0, WeightFormat::kQ4_1,
                                 WeightFormat::kQ4_K, WeightFormat::kQ5_K, WeightFormat::kQ6_K,
                                 WeightFormat::kF16,  WeightFormat::kBF16};

GgmlType ggml_type_of(WeightFormat f) {
  for (GgmlType t : {GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0, GgmlType::kQ4_0,
                     GgmlType::kQ4_1, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K})
    if (gguf_weight_format(t) == f) return t;
  ADD_FAILURE() << "no ggml type for " << weight_format_name(f);
  return GgmlType::kF32;
}

void put_half(std::byte* p, float v) {
  uint16_t h = float_to_fp16(v);
  std::memcpy(p, &h, 2);
}

// Random rows of `format`: random bytes for the quants and scale codes, then the fp16 scale
// fields set to sane positive values (random bytes there would be Inf/NaN or 1e4).
std::vector<std::byte> random_blocks(WeightFormat format, int64_t rows, int64_t cols,
                                     std::mt19937& rng) {
  const WeightBlockLayout layout = weight_block_layout(format);
  const int64_t blocks = rows * cols / layout.block_elements;
  std::vector<std::byte> bytes(size_t(blocks * layout.block_bytes));
  std::uniform_real_distribution<float> scale(0.002f, 0.02f), value(-1.0f, 1.0f);
  if (format == WeightFormat::kF16 || format == WeightFormat::kBF16) {
    for (int64_t i = 0; i < blocks; ++i) {
      uint16_t h =
          format == WeightFormat::kF16 ? float_to_fp16(value(rng)) : float_to_bf16(value(rng));
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
    return bytes;
  }
  for (auto& b : bytes) b = std::byte(rng() & 0xff);
  for (int64_t i = 0; i < blocks; ++i) {
    std::byte* b = bytes.data() + i * layout.block_bytes;
    switch (format) {
      case WeightFormat::kQ8_0:
      case WeightFormat::kQ4_0:
        put_half(b, scale(rng));
        break;
      case WeightFormat::kQ4_1:
        put_half(b, scale(rng));
        put_half(b + 2, -8 * scale(rng));
        break;
      case WeightFormat::kQ4_K:
      case WeightFormat::kQ5_K:
        put_half(b, scale(rng) / 16);  // 6-bit sub-scales multiply it
        put_half(b + 2, scale(rng) / 4);
        break;
      case WeightFormat::kQ6_K:
        put_half(b + 208, scale(rng) / 32);  // int8 sub-scales multiply it
        break;
      default:
        break;
    }
  }
  return bytes;
}

// fp32 oracle weights [rows, cols] from formats/gguf_dequant.
std::vector<float> oracle_weights(WeightFormat format, const std::vector<std::byte>& bytes,
                                  int64_t rows, int64_t cols) {
  const WeightBlockLayout layout = weight_block_layout(format);
  std::vector<float> w(size_t(rows * cols));
  dequantize_blocks(ggml_type_of(format), bytes, 0, size_t(rows * cols / layout.block_elements),
                    w.data());
  return w;
}

std::vector<float> random_activations(int64_t n, std::mt19937& rng) {
  // Heavy-ish tails as in real hidden states: a few large values set each block's scale.
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = normal(rng) * (rng() % 16 == 0 ? 8.0f : 1.0f);
  return x;
}

bool is_quantized(WeightFormat f) { return f != WeightFormat::kF16 && f != WeightFormat::kBF16; }

// The bound of the header comment for one output.
double error_bound(WeightFormat f, const float* w, const float* x, int64_t k) {
  double abs_dot = 0, quant = 0;
  for (int64_t b = 0; b < k / 32; ++b) {
    double amax = 0, wsum = 0;
    for (int i = 0; i < 32; ++i) {
      amax = std::max(amax, double(std::fabs(x[32 * b + i])));
      wsum += std::fabs(w[32 * b + i]);
      abs_dot += std::fabs(double(w[32 * b + i]) * x[32 * b + i]);
    }
    quant += amax / 127.0 / 2.0 * wsum;
  }
  return (is_quantized(f) ? quant : 0.0) + double(k) * std::ldexp(1.0, -22) * abs_dot + 1e-30;
}

std::string table_names() {
  std::string s;
  for (const QuantKernels* t : cpu_quant::usable_quant_kernels()) s += std::string(t->isa) + " ";
  return s;
}

TEST(CpuQuantKernels, DequantizeRowMatchesTheGgufDecoder) {
  std::mt19937 rng(1);
  for (WeightFormat f : kFormats) {
    const int64_t rows = 3, cols = 512;
    std::vector<std::byte> bytes = random_blocks(f, rows, cols, rng);
    std::vector<float> want = oracle_weights(f, bytes, rows, cols), got(want.size());
    const size_t row_bytes = bytes.size() / rows;
    for (int64_t r = 0; r < rows; ++r)
      cpu_quant::dequantize_row(f, bytes.data() + r * row_bytes, cols, got.data() + r * cols);
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_EQ(want[i], got[i]) << weight_format_name(f) << " value " << i;
  }
}

TEST(CpuQuantKernels, EveryTableDotsEveryFormatWithinTheBound) {
  SCOPED_TRACE("tables usable here: " + table_names());
  std::mt19937 rng(2);
  for (const QuantKernels* table : cpu_quant::usable_quant_kernels()) {
    for (WeightFormat f : kFormats) {
      for (int64_t k : {256, 768, 1536}) {
        const int64_t rows = 5;
        std::vector<std::byte> bytes = random_blocks(f, rows, k, rng);
        std::vector<float> w = oracle_weights(f, bytes, rows, k);
        std::vector<float> x = random_activations(k, rng);
        std::vector<ActBlock> act(size_t(k / 32));
        table->quantize_row(x.data(), k, act.data());
        const size_t row_bytes = bytes.size() / rows;
        double worst = 0;
        for (int64_t r = 0; r < rows; ++r) {
          const float* wr = w.data() + r * k;
          double ref = 0;
          for (int64_t i = 0; i < k; ++i) ref += double(wr[i]) * x[i];
          const void* row = bytes.data() + r * row_bytes;
          const int fi = int(f);
          const float got = is_quantized(f) ? table->dot[fi](k, row, act.data())
                                            : table->half_dot[fi](k, row, x.data());
          const double bound = error_bound(f, wr, x.data(), k);
          ASSERT_LE(std::fabs(got - ref), bound)
              << table->isa << " " << weight_format_name(f) << " k=" << k << " row " << r
              << ": got " << got << ", fp64 reference " << ref;
          worst = std::max(worst, std::fabs(got - ref) / bound);
        }
        // A bound that is never approached would hide a kernel that ignores the scales.
        EXPECT_GT(worst, is_quantized(f) ? 1e-3 : 0.0) << table->isa << weight_format_name(f);
      }
    }
  }
}

// The tables differ only in how they add: on the same int8 activations every block's integer
// sum is exact, so a table's dot may differ from the portable one by float rounding of the
// block terms' sum only (k / 32 terms; k for the 16-bit formats), far below the quantization
// bound above. A table that quantized, scaled or offset a block differently would show here.
TEST(CpuQuantKernels, EveryTableDotsAsThePortableTableDoes) {
  SCOPED_TRACE("tables usable here: " + table_names());
  std::mt19937 rng(5);
  const QuantKernels& portable = cpu_quant::select_quant_kernels("portable");
  for (const QuantKernels* table : cpu_quant::usable_quant_kernels()) {
    for (WeightFormat f : kFormats) {
      for (int64_t k : {256, 576, 1536}) {
        if (k % weight_block_layout(f).block_elements != 0) continue;
        std::vector<std::byte> bytes = random_blocks(f, 4, k, rng);
        std::vector<float> w = oracle_weights(f, bytes, 4, k);
        std::vector<float> x = random_activations(k, rng);
        std::vector<ActBlock> act(size_t(k / 32));
        portable.quantize_row(x.data(), k, act.data());
        const size_t row_bytes = bytes.size() / 4;
        for (int64_t r = 0; r < 4; ++r) {
          const void* row = bytes.data() + r * row_bytes;
          const int fi = int(f);
          const float want = is_quantized(f) ? portable.dot[fi](k, row, act.data())
                                             : portable.half_dot[fi](k, row, x.data());
          const float got = is_quantized(f) ? table->dot[fi](k, row, act.data())
                                            : table->half_dot[fi](k, row, x.data());
          double abs_dot = 0;
          for (int64_t i = 0; i < k; ++i) abs_dot += std::fabs(double(w[r * k + i]) * x[i]);
          // Worst-case float summation of `terms` terms: terms * 4 ulp of the absolute sum.
          const double terms = double(is_quantized(f) ? k / 32 : k);
          EXPECT_LE(std::fabs(double(got) - want), terms * std::ldexp(1.0, -22) * abs_dot)
              << table->isa << " " << weight_format_name(f) << " k=" << k << " row " << r << ": "
              << got << " against the portable table's " << want;
        }
      }
    }
  }
}

TEST(CpuQuantKernels, QuantizedActivationsReproduceTheRow) {
  std::mt19937 rng(3);
  for (const QuantKernels* table : cpu_quant::usable_quant_kernels()) {
    std::vector<float> x = random_activations(256, rng);
    x[40] = 0;  // a zero block must not divide by zero
    std::fill(x.begin() + 64, x.begin() + 96, 0.0f);
    std::vector<ActBlock> act(8);
    table->quantize_row(x.data(), 256, act.data());
    for (int b = 0; b < 8; ++b) {
      int sum[2] = {0, 0};
      for (int i = 0; i < 32; ++i) {
        const float xi = x[32 * b + i];
        EXPECT_LE(std::fabs(act[b].d * act[b].qs[i] - xi), act[b].d / 2 * (1 + 1e-5f) + 1e-30f)
            << table->isa;
        sum[i / 16] += act[b].qs[i];
      }
      EXPECT_EQ(act[b].sum16[0], sum[0]);
      EXPECT_EQ(act[b].sum16[1], sum[1]);
      EXPECT_FLOAT_EQ(act[b].s, act[b].d * float(sum[0] + sum[1]));
    }
    EXPECT_EQ(act[2].d, 0.0f);
  }
}

// The op: CpuBackend::linear on block weights (every usable table, token counts around the
// tile size, a bias, thread counts 1 and 3) against linear on the dequantized fp32 weights.
TEST(CpuQuantKernels, LinearOnBlockWeightsMatchesTheFp32Path) {
  std::mt19937 rng(4);
  CpuBackend reference(CpuBackendOptions{.num_threads = 1, .block_weights = false});
  for (const QuantKernels* table : cpu_quant::usable_quant_kernels()) {
    for (int threads : {1, 3}) {
      CpuBackend backend(CpuBackendOptions{.num_threads = threads, .kernels = table->isa});
      for (WeightFormat f : kFormats) {
        const int64_t n = 37, k = 512;
        std::vector<std::byte> bytes = random_blocks(f, n, k, rng);
        std::vector<float> w = oracle_weights(f, bytes, n, k);
        Tensor wq = backend.upload_blocks(f, bytes, {n, k});
        Tensor wf = reference.upload(w, {n, k}, DType::kF32);
        std::vector<float> bias_host = random_activations(n, rng);
        Tensor bias = reference.upload(bias_host, {n}, DType::kF32);
        for (int64_t t : {1, 7, 8, 19}) {
          std::vector<float> xh = random_activations(t * k, rng);
          Tensor x = reference.upload(xh, {t, k}, DType::kF32);
          Tensor out = backend.empty({t, n}, DType::kF32);
          Tensor want = reference.empty({t, n}, DType::kF32);
          std::vector<float> poison(size_t(t * n), std::nanf(""));
          std::memcpy(out.data<float>(), poison.data(), poison.size() * sizeof(float));
          backend.linear(x, wq, &bias, out);
          reference.linear(x, wf, &bias, want);
          for (int64_t r = 0; r < t; ++r)
            for (int64_t j = 0; j < n; ++j) {
              const double bound = error_bound(f, w.data() + j * k, xh.data() + r * k, k);
              const float got = out.data<float>()[r * n + j], ref = want.data<float>()[r * n + j];
              ASSERT_LE(std::fabs(double(got) - ref), bound + 1e-6 * std::fabs(ref))
                  << table->isa << " " << weight_format_name(f) << " t=" << t << " threads "
                  << threads << " row " << r << " col " << j;
            }
        }
      }
    }
  }
}

// Every table's activation quantizer gives the portable one's bits (the SIMD tables
// quantize eight values at a time): rows of 1, 3 and 18 blocks, values exactly halfway
// between two steps (round half away from zero), zeros, -0, and blocks led by a negative max.
TEST(CpuQuantKernels, EveryTableQuantizesActivationsToThePortableBits) {
  std::mt19937 rng(6);
  const QuantKernels& portable = cpu_quant::select_quant_kernels("portable");
  for (const QuantKernels* table : cpu_quant::usable_quant_kernels()) {
    for (int64_t k : {32, 96, 576}) {
      std::vector<float> x = random_activations(k, rng);
      // Block 0: max 127 so d = 1 and each value below lands exactly on a tie or a sign edge.
      const float special[] = {127.0f, 0.5f, -0.5f, 1.5f, -1.5f, 2.5f, -2.5f, -0.0f, 0.0f, -126.5f};
      std::copy(std::begin(special), std::end(special), x.begin());
      if (k > 32) {
        std::fill(x.begin() + 32, x.begin() + 64, 0.0f);  // an all-zero block
        x[64] = -50.0f;                                   // a block whose max is negative
      }
      std::vector<ActBlock> want(size_t(k / 32)), got(size_t(k / 32));
      portable.quantize_row(x.data(), k, want.data());
      table->quantize_row(x.data(), k, got.data());
      for (size_t b = 0; b < want.size(); ++b) {
        ASSERT_EQ(want[b].d, got[b].d) << table->isa << " k=" << k << " block " << b;
        ASSERT_EQ(want[b].s, got[b].s) << table->isa << " k=" << k << " block " << b;
        ASSERT_EQ(want[b].sum16[0], got[b].sum16[0]) << table->isa << " block " << b;
        ASSERT_EQ(want[b].sum16[1], got[b].sum16[1]) << table->isa << " block " << b;
        for (int i = 0; i < 32; ++i)
          ASSERT_EQ(want[b].qs[i], got[b].qs[i])
              << table->isa << " k=" << k << " block " << b << " value " << i;
      }
    }
  }
}

// The fused ops on stacked block weights (linear_parts, linear_silu_mul) give exactly the
// numbers of separate linear ops (and silu_mul) on the separate weights: every format, every
// table, parts of odd row counts, biases on some parts, token counts below and above the
// token tile (and, where OpenBLAS is found, above the sgemm switch), 1 and 3 threads.
TEST(CpuQuantKernels, FusedOpsOnStackedBlockWeightsMatchSeparateOps) {
  std::mt19937 rng(7);
  for (const QuantKernels* table : cpu_quant::usable_quant_kernels()) {
    for (int threads : {1, 3}) {
      CpuBackend backend(CpuBackendOptions{.num_threads = threads, .kernels = table->isa});
      for (WeightFormat f : kFormats) {
        const int64_t k = 512;
        const int64_t rows[3] = {37, 5, 21};
        std::vector<Tensor> parts, biases;
        for (int64_t n : rows) {
          parts.push_back(backend.upload_blocks(f, random_blocks(f, n, k, rng), {n, k}));
          biases.push_back(backend.upload(random_activations(n, rng), {n}, DType::kF32));
        }
        const Tensor qkv = backend.fuse_rows(parts);
        ASSERT_TRUE(qkv.defined()) << weight_format_name(f);
        const int64_t inter = 29;
        const Tensor gate_w = backend.upload_blocks(f, random_blocks(f, inter, k, rng), {inter, k});
        const Tensor up_w = backend.upload_blocks(f, random_blocks(f, inter, k, rng), {inter, k});
        const Tensor gate_up = backend.fuse_rows(std::array{gate_w, up_w});
        ASSERT_TRUE(gate_up.defined()) << weight_format_name(f);
        for (int64_t t : {1, 3, 9, 19}) {
          SCOPED_TRACE(std::string(table->isa) + " " + weight_format_name(f) +
                       " t=" + std::to_string(t) + " threads " + std::to_string(threads));
          const Tensor x = backend.upload(random_activations(t * k, rng), {t, k}, DType::kF32);
          // The middle part without a bias.
          const std::array<const Tensor*, 3> bias_ptrs{&biases[0], nullptr, &biases[2]};
          std::vector<Tensor> got, want;
          for (int64_t n : rows) {
            got.push_back(backend.empty({t, n}, DType::kF32));
            want.push_back(backend.empty({t, n}, DType::kF32));
          }
          const std::array<Tensor*, 3> outs{&got[0], &got[1], &got[2]};
          backend.linear_parts(x, qkv, bias_ptrs, outs);
          for (int p = 0; p < 3; ++p) backend.linear(x, parts[p], bias_ptrs[p], want[p]);
          for (int p = 0; p < 3; ++p)
            for (int64_t i = 0; i < t * rows[p]; ++i)
              ASSERT_EQ(got[p].data<float>()[i], want[p].data<float>()[i])
                  << "part " << p << " " << i;

          Tensor gate = backend.empty({t, inter}, DType::kF32),
                 up = backend.empty({t, inter}, DType::kF32);
          Tensor act = backend.empty({t, inter}, DType::kF32);
          Tensor gate2 = backend.empty({t, inter}, DType::kF32),
                 up2 = backend.empty({t, inter}, DType::kF32);
          Tensor act2 = backend.empty({t, inter}, DType::kF32);
          backend.linear_silu_mul(x, gate_up, gate, up, act);
          backend.linear(x, gate_w, nullptr, gate2);
          backend.linear(x, up_w, nullptr, up2);
          backend.silu_mul(gate2, up2, act2);
          for (int64_t i = 0; i < t * inter; ++i) {
            ASSERT_EQ(gate.data<float>()[i], gate2.data<float>()[i]) << "gate " << i;
            ASSERT_EQ(up.data<float>()[i], up2.data<float>()[i]) << "up " << i;
            ASSERT_EQ(act.data<float>()[i], act2.data<float>()[i]) << "silu product " << i;
          }
        }
      }
    }
  }
}

// Stacked outputs that do not add up to the stacked weight's rows are refused.
TEST(CpuQuantKernels, FusedOpsRefuseMismatchedShapes) {
  std::mt19937 rng(8);
  CpuBackend backend(CpuBackendOptions{.num_threads = 2});
  const int64_t k = 64;
  const Tensor a = backend.upload_blocks(WeightFormat::kQ4_1,
                                         random_blocks(WeightFormat::kQ4_1, 4, k, rng), {4, k});
  const Tensor fused = backend.fuse_rows(std::array{a, a});
  const Tensor x = backend.upload(random_activations(k, rng), {1, k}, DType::kF32);
  Tensor o4 = backend.empty({1, 4}, DType::kF32), o3 = backend.empty({1, 3}, DType::kF32);
  const std::array<const Tensor*, 2> no_bias{nullptr, nullptr};
  EXPECT_THROW(backend.linear_parts(x, fused, no_bias, std::array<Tensor*, 2>{&o4, &o3}), Error);
  Tensor big = backend.empty({1, 5}, DType::kF32);
  EXPECT_THROW(backend.linear_parts(x, fused, no_bias, std::array<Tensor*, 2>{&o4, &big}), Error);
  Tensor g3 = backend.empty({1, 3}, DType::kF32);
  EXPECT_THROW(backend.linear_silu_mul(x, fused, g3, o4, o4), Error);
}

TEST(CpuQuantKernels, EmbeddingOfABlockTableIsTheDequantizedRow) {
  std::mt19937 rng(5);
  CpuBackend backend(CpuBackendOptions{.num_threads = 1});
  for (WeightFormat f : kFormats) {
    const int64_t vocab = 11, hidden = 256;
    std::vector<std::byte> bytes = random_blocks(f, vocab, hidden, rng);
    std::vector<float> w = oracle_weights(f, bytes, vocab, hidden);
    Tensor table = backend.upload_blocks(f, bytes, {vocab, hidden});
    BatchPlan plan;
    plan.token_ids = {10, 0, 3};
    Tensor out = backend.empty({3, hidden}, DType::kF32);
    backend.embedding(table, plan, out);
    for (int r = 0; r < 3; ++r)
      for (int64_t i = 0; i < hidden; ++i)
        ASSERT_EQ(out.data<float>()[r * hidden + i], w[plan.token_ids[r] * hidden + i])
            << weight_format_name(f);
  }
}

TEST(CpuQuantKernels, RefusesBadBlockWeightsAndUnknownTables) {
  CpuBackend backend(CpuBackendOptions{.num_threads = 1});
  std::vector<std::byte> bytes(18 * 2);
  EXPECT_THROW(backend.upload_blocks(WeightFormat::kQ4_0, bytes, {2, 48}), Error);  // not whole
  EXPECT_THROW(backend.upload_blocks(WeightFormat::kQ4_0, bytes, {3, 32}), Error);  // too few
  CpuBackend fp32(CpuBackendOptions{.num_threads = 1, .block_weights = false});
  EXPECT_FALSE(fp32.supports_weight_format(WeightFormat::kQ4_0));
  EXPECT_THROW(fp32.upload_blocks(WeightFormat::kQ4_0, bytes, {2, 32}), Error);
  EXPECT_THROW(cpu_quant::select_quant_kernels("sse9"), Error);
  EXPECT_EQ(std::string(cpu_quant::select_quant_kernels("portable").isa), "portable");
}

}  // namespace
}  // namespace relayllm
