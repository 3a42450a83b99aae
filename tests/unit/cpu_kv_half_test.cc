// The CPU backend's fp16 KV cache against the fp32 one (the reference path).
//
// Kernels: every usable table's fp32 -> fp16 row conversion equals common/half.h's
// float_to_fp16 bit for bit (round to nearest even, subnormals, overflow, NaN), so the stored
// cache does not depend on the CPU; the fp16 axpy and dot are fp32 arithmetic on exactly
// decoded halves: |error| <= n 2^-22 sum|terms| (fp32 rounding of a sum of n terms).
//
// End to end (the HF fixtures, fp32 weights, whole prompt and relay prefix + decode): only K
// and V are rounded to fp16 (relative 2^-11 per value). A score q.k then moves by at most
// 2^-11 scale sum|q_i k_i| and o by about as much relative; through 2 layers and the lm_head
// the logits move ~1e-3 relative. Measured worst case over the five fixtures: 7.9e-4 (qwen3);
// bound 5e-3. A wrong stride or a lost conversion (values read as
// fp32 bits) gives order-one errors. Relay on vs off with an fp16 cache: both store the same
// halves of the same inputs, so they agree to fp32 rounding, except that a last-bit
// difference of a layer's output (different summation order) can flip the fp16 rounding of
// one K/V value of the next layer (2^-11 relative on one value of a row): measured worst
// 3.0e-5 (qwen3), bound 1e-4.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "../common/hf_fixture.h"
#include "../common/paged_forward.h"
#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/backend/cpu/quant_dispatch.h"
#include "relayllm/common/error.h"
#include "relayllm/common/half.h"
#include "relayllm/model/llama_model.h"
#include "relayllm/model/model_config.h"
#include "relayllm/model/model_weights.h"

namespace relayllm {
namespace {

using testing::relative_error;
using testing::run_paged;

std::vector<float> edge_and_random_values() {
  std::vector<float> v = {0.0f,
                          -0.0f,
                          1.0f,
                          -1.0f,
                          65504.0f,
                          65519.0f,
                          65520.0f,
                          -70000.0f,
                          std::numeric_limits<float>::infinity(),
                          std::nanf(""),
                          6.103515625e-05f,  // smallest normal
                          5.9604645e-08f,    // 2^-24, smallest subnormal
                          2.9802322e-08f,    // 2^-25: a tie, rounds to 0
                          4.4703484e-08f,    // 1.5 * 2^-25: rounds up to 2^-24
                          1.0f + 1.0f / 2048,
                          1.0f + 3.0f / 2048,
                          3.0517578e-05f,
                          1e-30f};
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 4000; ++i) {
    // Random bit patterns over the fp16 range and beyond (exponents 2^-30 .. 2^17).
    uint32_t b = bits(rng);
    b = (b & 0x807fffff) | (uint32_t(97 + (b >> 23) % 48) << 23);
    float f;
    std::memcpy(&f, &b, 4);
    v.push_back(f);
  }
  return v;
}

TEST(CpuKvHalf, EveryTableRoundsRowsToHalfLikeTheReference) {
  const std::vector<float> x = edge_and_random_values();
  for (const cpu_quant::QuantKernels* table : cpu_quant::usable_quant_kernels()) {
    std::vector<uint16_t> got(x.size(), 0xdead);
    table->to_f16_row(x.data(), int64_t(x.size()), got.data());
    for (size_t i = 0; i < x.size(); ++i) {
      const uint16_t want = float_to_fp16(x[i]);
      if (std::isnan(x[i])) {
        EXPECT_TRUE(std::isnan(fp16_to_float(got[i]))) << table->isa << " value " << i;
        continue;
      }
      ASSERT_EQ(got[i], want) << table->isa << " value " << x[i] << " (index " << i << ")";
    }
  }
}

TEST(CpuKvHalf, HalfAxpyAndDotAreFp32ArithmeticOnTheHalves) {
  std::mt19937 rng(8);
  std::normal_distribution<float> normal;
  for (const cpu_quant::QuantKernels* table : cpu_quant::usable_quant_kernels())
    for (int64_t n : {1, 7, 8, 64, 67, 128}) {
      std::vector<uint16_t> v(static_cast<size_t>(n));
      std::vector<float> y(static_cast<size_t>(n)), q(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        v[size_t(i)] = float_to_fp16(normal(rng));
        y[size_t(i)] = normal(rng);
        q[size_t(i)] = normal(rng);
      }
      const float a = normal(rng);
      std::vector<float> got = y;
      table->f16_axpy(n, a, v.data(), got.data());
      double dot = 0, abs_dot = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double vi = fp16_to_float(v[size_t(i)]);
        const double want = double(y[size_t(i)]) + double(a) * vi;
        // One product and one sum (or one fma): two fp32 roundings at most.
        EXPECT_NEAR(got[size_t(i)], want,
                    std::ldexp(1.0, -23) * (std::fabs(want) + std::fabs(a * vi)) + 1e-30)
            << table->isa << " n=" << n << " i=" << i;
        dot += vi * q[size_t(i)];
        abs_dot += std::fabs(vi * q[size_t(i)]);
      }
      const float got_dot = table->half_dot[int(WeightFormat::kF16)](n, v.data(), q.data());
      EXPECT_NEAR(got_dot, dot, double(n) * std::ldexp(1.0, -22) * abs_dot + 1e-30)
          << table->isa << " n=" << n;
    }
}

class CpuKvHalfModels : public ::testing::TestWithParam<std::string> {};

TEST_P(CpuKvHalfModels, Fp16CacheMatchesTheFp32CacheAndRelayOnEqualsOff) {
  testing::HfFixture f = testing::load_hf_fixture(GetParam());
  CpuBackend fp32(CpuBackendOptions{.num_threads = 1, .block_weights = false});
  LlamaModel ref_model(f.config, f.weights, fp32, f.config.max_position_embeddings);
  double worst = 0, worst_relay = 0;
  for (const cpu_quant::QuantKernels* table : cpu_quant::usable_quant_kernels()) {
    CpuBackend half(CpuBackendOptions{
        .num_threads = 2, .block_weights = false, .kernels = table->isa, .kv_dtype = DType::kF16});
    LlamaModel model(f.config, f.weights, half, f.config.max_position_embeddings);
    ASSERT_EQ(model.allocate_kv_cache(1, 4)[0].k.dtype, DType::kF16);
    for (size_t s = 0; s < f.inputs.size(); ++s) {
      const auto& tokens = f.inputs[s];
      const int32_t n = int32_t(tokens.size());
      const auto whole_ref = run_paged(ref_model, tokens, 0, n);
      const auto whole = run_paged(model, tokens, 0, n);
      const auto relay = run_paged(model, tokens, 7, 1);  // relay prefix, then decode steps
      for (size_t r = 0; r < whole.size(); ++r) {
        const double e = relative_error(whole[r], whole_ref[r]);
        worst = std::max(worst, e);
        EXPECT_LT(e, 5e-3) << GetParam() << " " << table->isa << " sequence " << s << " row " << r;
      }
      for (size_t r = 0; r < relay.size(); ++r) {
        const double e = relative_error(relay[r], whole[7 + r]);
        worst_relay = std::max(worst_relay, e);
        EXPECT_LT(e, 1e-4) << GetParam() << " relay on vs off, " << table->isa << " sequence " << s
                           << " row " << r;
      }
    }
  }
  std::printf("%s: fp16 KV vs fp32 KV, worst relative error %.2e; relay on vs off %.2e\n",
              GetParam().c_str(), worst, worst_relay);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CpuKvHalfModels,
                         ::testing::Values("llama2", "llama3", "mistral", "qwen2", "qwen3"));

TEST(CpuKvHalf, RefusesOtherKvDtypes) {
  EXPECT_THROW(CpuBackend(CpuBackendOptions{.kv_dtype = DType::kBF16}), Error);
  CpuBackend backend(CpuBackendOptions{.num_threads = 1});
  EXPECT_THROW(backend.empty({4}, DType::kBF16), Error);
}

}  // namespace
}  // namespace relayllm
