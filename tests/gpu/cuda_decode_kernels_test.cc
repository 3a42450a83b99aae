// The decode step's kernels against the CPU reference: the skinny GEMM
// (cuda_skinny_gemm.cu) and the fused ops built on it (linear_parts, linear_silu_mul),
// rope_write_kv and the register-resident norms. Fresh random bf16-rounded inputs,
// NaN-poisoned outputs, every row count from 1 to past the cutover, feature counts that
// are not multiples of the 16-row tile and K that is not a multiple of the 32-wide chunk
// (and one not a multiple of 8, which cuBLASLt takes).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <random>

#include "gpu_op_test_util.h"
#include "relayllm/backend/cpu/cpu_backend.h"
#include "relayllm/backend/cuda/cuda_backend.h"
#include "relayllm/common/half.h"

namespace relayllm {
namespace {

using testing::poisoned;
using testing::relative_error;
using testing::to_host;

constexpr double kBound = 1e-2;  // a few bf16 roundings of each output

struct Env {
  CpuBackend cpu{4};
  CudaBackend skinny{CudaBackendOptions{.skinny_gemm_max_rows = 32}};  // every t <= 32 skinny
  CudaBackend cublas{CudaBackendOptions{.skinny_gemm_max_rows = 0}};
  std::mt19937_64 rng{777};

  std::vector<float> random(size_t n, float scale = 1.0f) {
    return testing::random_bf16(rng, n, scale);
  }
  // The CPU reference: out [t, n] = x [t, k] * w [n, k]^T (+ b).
  std::vector<float> reference(const std::vector<float>& x, const std::vector<float>& w,
                               const std::vector<float>* b, int64_t t, int64_t n, int64_t k) {
    Tensor out = cpu.empty({t, n}, DType::kF32);
    Tensor cb = b ? cpu.upload(*b, {n}, DType::kF32) : Tensor{};
    cpu.linear(cpu.upload(x, {t, k}, DType::kF32), cpu.upload(w, {n, k}, DType::kF32),
               b ? &cb : nullptr, out);
    return to_host(out, cpu);
  }
};

Env& env() {
  static Env* e = new Env();
  return *e;
}

std::vector<float> slice_rows(const std::vector<float>& m, int64_t cols, int64_t first,
                              int64_t count) {
  return {m.begin() + first * cols, m.begin() + (first + count) * cols};
}

const std::vector<int64_t> kRowCounts = {1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 40};

TEST(CudaDecodeKernels, LinearEveryRowCountAgainstCpu) {
  Env& e = env();
  struct Shape {
    int64_t n, k;
  };
  // n: a whole tile, a partial last tile, fewer rows than a tile; k: whole chunks, a
  // partial last chunk (k % 32 == 8), more chunks than the warps' first round, k % 8 != 0.
  for (Shape s :
       {Shape{256, 128}, Shape{300, 200}, Shape{7, 72}, Shape{130, 4104}, Shape{64, 100}}) {
    auto w = e.random(size_t(s.n * s.k), 0.05f), b = e.random(size_t(s.n));
    for (int64_t t : kRowCounts) {
      auto x = e.random(size_t(t * s.k));
      for (int mode = 0; mode < 3; ++mode) {  // bf16 out; bf16 out with bias; fp32 out
        const bool with_bias = mode == 1;
        const DType out_dtype = mode == 2 ? DType::kF32 : DType::kBF16;
        const auto ref = e.reference(x, w, with_bias ? &b : nullptr, t, s.n, s.k);
        for (CudaBackend* be : {&e.skinny, &e.cublas}) {
          Tensor gb = be->upload(b, {s.n}, DType::kBF16);
          Tensor out = poisoned(*be, {t, s.n}, out_dtype);
          be->linear(be->upload(x, {t, s.k}, DType::kBF16), be->upload(w, {s.n, s.k}, DType::kBF16),
                     with_bias ? &gb : nullptr, out);
          EXPECT_LT(relative_error(to_host(out, *be), ref), kBound)
              << (be == &e.skinny ? "skinny" : "cublas") << " t=" << t << " n=" << s.n
              << " k=" << s.k << " mode=" << mode;
        }
      }
    }
  }
}

TEST(CudaDecodeKernels, FusedPartsWithBiasAgainstSeparateProjections) {
  Env& e = env();
  const int64_t k = 264;
  // q/k/v-like parts; the second set puts part boundaries inside a 16-row tile.
  for (std::array<int64_t, 3> rows :
       {std::array<int64_t, 3>{128, 32, 32}, std::array<int64_t, 3>{40, 20, 21}}) {
    std::array<std::vector<float>, 3> w, b;
    for (int p = 0; p < 3; ++p) {
      w[p] = e.random(size_t(rows[p] * k), 0.05f);
      b[p] = e.random(size_t(rows[p]));
    }
    for (CudaBackend* be : {&e.skinny, &e.cublas}) {
      std::array<Tensor, 3> parts;
      for (int p = 0; p < 3; ++p) parts[p] = be->upload(w[p], {rows[p], k}, DType::kBF16);
      Tensor fused = be->fuse_rows(parts);
      ASSERT_TRUE(fused.defined());
      ASSERT_EQ(fused.rows(), rows[0] + rows[1] + rows[2]);
      for (int64_t t : kRowCounts) {
        auto x = e.random(size_t(t * k));
        std::array<Tensor, 3> outs, biases;
        for (int p = 0; p < 3; ++p) {
          outs[p] = poisoned(*be, {t, rows[p]});
          biases[p] = be->upload(b[p], {rows[p]}, DType::kBF16);
        }
        // The middle part without bias: a null among the biases.
        const std::array<const Tensor*, 3> bias_ptrs{&biases[0], nullptr, &biases[2]};
        const std::array<Tensor*, 3> out_ptrs{&outs[0], &outs[1], &outs[2]};
        be->linear_parts(be->upload(x, {t, k}, DType::kBF16), fused, bias_ptrs, out_ptrs);
        for (int p = 0; p < 3; ++p) {
          const auto ref = e.reference(x, w[p], p == 1 ? nullptr : &b[p], t, rows[p], k);
          EXPECT_LT(relative_error(to_host(outs[p], *be), ref), kBound)
              << (be == &e.skinny ? "skinny" : "cublas") << " part " << p << " t=" << t
              << " rows=" << rows[p];
        }
      }
    }
  }
}

TEST(CudaDecodeKernels, GatedSiluMulAgainstSeparateOps) {
  Env& e = env();
  for (int64_t inter : {int64_t(96), int64_t(100)}) {
    const int64_t k = 136;
    auto wg = e.random(size_t(inter * k), 0.1f), wu = e.random(size_t(inter * k), 0.1f);
    for (CudaBackend* be : {&e.skinny, &e.cublas}) {
      Tensor fused = be->fuse_rows(std::array{be->upload(wg, {inter, k}, DType::kBF16),
                                              be->upload(wu, {inter, k}, DType::kBF16)});
      ASSERT_TRUE(fused.defined());
      for (int64_t t : kRowCounts) {
        auto x = e.random(size_t(t * k));
        // Reference: the separate projections rounded to bf16, then silu_mul, on the CPU.
        auto round = [](std::vector<float> v) {
          for (float& f : v) f = bf16_to_float(float_to_bf16(f));
          return v;
        };
        const auto g = round(e.reference(x, wg, nullptr, t, inter, k));
        const auto u = round(e.reference(x, wu, nullptr, t, inter, k));
        Tensor ref = e.cpu.empty({t, inter}, DType::kF32);
        e.cpu.silu_mul(e.cpu.upload(g, {t, inter}, DType::kF32),
                       e.cpu.upload(u, {t, inter}, DType::kF32), ref);
        Tensor gate = poisoned(*be, {t, inter}), up = poisoned(*be, {t, inter});
        Tensor out = poisoned(*be, {t, inter});
        be->linear_silu_mul(be->upload(x, {t, k}, DType::kBF16), fused, gate, up, out);
        EXPECT_LT(relative_error(to_host(out, *be), to_host(ref, e.cpu)), kBound)
            << (be == &e.skinny ? "skinny" : "cublas") << " t=" << t << " inter=" << inter;
      }
    }
  }
}

TEST(CudaDecodeKernels, FuseRowsRefusesMismatchedParts) {
  Env& e = env();
  auto a = e.random(16 * 64), b = e.random(8 * 72);
  Tensor fused = e.skinny.fuse_rows(std::array{e.skinny.upload(a, {16, 64}, DType::kBF16),
                                               e.skinny.upload(b, {8, 72}, DType::kBF16)});
  EXPECT_FALSE(fused.defined());  // different K: kept apart
  CudaBackend off{CudaBackendOptions{.fuse_weights = false}};
  EXPECT_FALSE(off.fuse_rows(std::array{off.upload(a, {16, 64}, DType::kBF16),
                                        off.upload(a, {16, 64}, DType::kBF16)})
                   .defined());
}

// The register-resident norms (one or two 16-byte vectors per thread, up to 1024
// threads) and, past their limits (n % 8 != 0, n > 16384), the loop kernels they fall
// back to; rmsnorm in place as the per-head q/k norms run it.
TEST(CudaDecodeKernels, NormsInRegistersAgainstCpu) {
  Env& e = env();
  for (int64_t n : {64, 128, 4096, 4104, 5000, 8200, 14336, 16384, 16392}) {
    for (int64_t rows : {1, 3}) {
      auto x = e.random(size_t(rows * n)), w = e.random(size_t(n)), d = e.random(size_t(rows * n));
      CudaBackend& g = e.skinny;
      Tensor cx = e.cpu.upload(x, {rows, n}, DType::kF32), cw = e.cpu.upload(w, {n}, DType::kF32);
      Tensor cout = e.cpu.empty({rows, n}, DType::kF32);
      e.cpu.rmsnorm(cx, cw, 1e-5f, cout);
      Tensor gx = g.upload(x, {rows, n}, DType::kBF16), gw = g.upload(w, {n}, DType::kBF16);
      g.rmsnorm(gx, gw, 1e-5f, gx);  // in place
      EXPECT_LT(relative_error(to_host(gx, g), to_host(cout, e.cpu)), kBound) << "rmsnorm n=" << n;

      Tensor cd = e.cpu.upload(d, {rows, n}, DType::kF32);
      e.cpu.add_rmsnorm(cx, cd, cw, 1e-5f, cout);
      Tensor gr = g.upload(x, {rows, n}, DType::kBF16), gout = poisoned(g, {rows, n});
      g.add_rmsnorm(gr, g.upload(d, {rows, n}, DType::kBF16), gw, 1e-5f, gout);
      EXPECT_LT(relative_error(to_host(gr, g), to_host(cx, e.cpu)), kBound) << "residual n=" << n;
      EXPECT_LT(relative_error(to_host(gout, g), to_host(cout, e.cpu)), kBound)
          << "add_rmsnorm n=" << n;
    }
  }
}

TEST(CudaDecodeKernels, RopeWriteKvMatchesRopeThenWriteKv) {
  Env& e = env();
  for (int64_t hq : {int64_t(4), int64_t(8), int64_t(32)}) {
    const int64_t rows = 11, hk = hq == 32 ? 8 : 2, d = hq == 32 ? 128 : 64, max_pos = 300,
                  pool_blocks = 12, block = 4;
    BatchPlan plan;
    std::uniform_int_distribution<int> pos(0, int(max_pos) - 1);
    for (int64_t r = 0; r < rows; ++r) {
      plan.token_ids.push_back(1);
      plan.positions.push_back(pos(e.rng));
      plan.slot_mapping.push_back(int64_t(r * 4 + 2));
    }
    std::vector<float> cs(size_t(max_pos * d));
    for (int64_t p = 0; p < max_pos; ++p)
      for (int64_t i = 0; i < d / 2; ++i) {
        double a = p * std::pow(10000.0, -2.0 * i / d);
        cs[p * d + i] = float(std::cos(a));
        cs[p * d + d / 2 + i] = float(std::sin(a));
      }
    auto q = e.random(rows * hq * d), k = e.random(rows * hk * d), v = e.random(rows * hk * d);
    auto pool = e.random(pool_blocks * block * hk * d);
    CudaBackend& g = e.skinny;
    g.begin_step(plan);
    e.cpu.begin_step(plan);
    Tensor gq = g.upload(q, {rows, hq, d}, DType::kBF16),
           gk = g.upload(k, {rows, hk, d}, DType::kBF16);
    KvLayer gkv{g.upload(pool, {pool_blocks, block, hk, d}, DType::kBF16),
                g.upload(pool, {pool_blocks, block, hk, d}, DType::kBF16)};
    g.rope_write_kv(gq, gk, g.upload(v, {rows, hk, d}, DType::kBF16),
                    g.upload(cs, {max_pos, d}, DType::kF32), gkv, plan);
    Tensor cq = e.cpu.upload(q, {rows, hq, d}, DType::kF32),
           ck = e.cpu.upload(k, {rows, hk, d}, DType::kF32);
    KvLayer ckv{e.cpu.upload(pool, {pool_blocks, block, hk, d}, DType::kF32),
                e.cpu.upload(pool, {pool_blocks, block, hk, d}, DType::kF32)};
    e.cpu.rope(cq, ck, e.cpu.upload(cs, {max_pos, d}, DType::kF32), plan);
    e.cpu.write_kv(ck, e.cpu.upload(v, {rows, hk, d}, DType::kF32), ckv, plan);
    EXPECT_LT(relative_error(to_host(gq, g), to_host(cq, e.cpu)), kBound) << "q hq=" << hq;
    EXPECT_LT(relative_error(to_host(gk, g), to_host(ck, e.cpu)), kBound) << "k hq=" << hq;
    EXPECT_LT(relative_error(to_host(gkv.k, g), to_host(ckv.k, e.cpu)), kBound)
        << "k pool hq=" << hq;
    EXPECT_LT(relative_error(to_host(gkv.v, g), to_host(ckv.v, e.cpu)), kBound)
        << "v pool hq=" << hq;
  }
}

}  // namespace
}  // namespace relayllm
