// Skinny GEMM for decode: out[T, N] = x[T, K] * W[N, K]^T with few rows T (<= 32).
//
// At small T a projection is a read of W and nothing else (2*N*K bytes, 2*T*N*K
// FLOPs), so the kernel is built to stream W once at full bandwidth:
// - The mma operands are swapped: W's rows are the M dimension of mma.m16n8k16
//   (16 output features per tile) and the T tokens are N (8 per tile), so a decode
//   step with one token wastes 7 of 8 columns of a small instruction instead of 15 of
//   16 rows of a tile, and the tensor work stays far below the memory time.
// - W is read straight into the mma's A fragments with 16-byte loads. The order of
//   the K terms in a dot product is free, so a thread's 16 bytes (8 consecutive k of
//   one row) are split over the k positions it holds in two k16 mmas, and x's
//   fragment is loaded with the same permutation (a 16-byte load of 8 k of one token).
// - Each block owns 16 output features (32 with the gated epilogue) and its 8 warps
//   split K; every warp keeps U chunks of 32 k (U x 2 x 16 bytes per thread) in
//   flight. Partial sums meet once, in shared memory, at the end.
// - Epilogues: up to three outputs by row range (a fused q/k/v weight), a bias per
//   part, fp32 or 16-bit output; or the gated form silu(W_gate x) * (W_up x) over a
//   [gate; up] weight, each rounded to 16 bits first as the unfused ops round them.
#include <cstdint>

#include "relayllm/backend/cuda/cuda_check.cuh"
#include "relayllm/backend/cuda/cuda_mma.cuh"
#include "relayllm/backend/cuda/cuda_skinny_gemm.cuh"

namespace relayllm::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kTileRows = 16;
constexpr int kChunk = 32;  // k per chunk: two m16n8k16 mmas

__device__ __forceinline__ uint4 load_stream(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// Programmatic dependent launch (sm_90): the next kernel may start once every block of
// this one has begun; it waits for this one's completion (and memory) before it reads
// what this one writes. Both are no-ops where the launch was not programmatic.
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

template <typename T>
__device__ __forceinline__ float round_to(float v) {
  return to_f32(from_f32<T>(v));
}

// NT: 8-token tiles (T <= 8 * NT). MT: 16-row tiles per block (2: gated, gate and up).
// U: chunks of 32 k each warp loads before it computes.
template <typename T, int NT, int MT, int U, bool kOutF32>
__global__ void __launch_bounds__(kWarps * 32) skinny_gemm_kernel(const SkinnyGemmArgs args) {
  allow_dependent_launch();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  const int64_t k_len = args.k, rows = args.rows;
  const int64_t tile_row = int64_t(blockIdx.x) * kTileRows;
  const T* w = static_cast<const T*>(args.w);
  const T* x = static_cast<const T*>(args.x);

  // This thread's two weight rows per m-tile (g and g + 8 of the tile); a row past the
  // end reads zeros. In the gated form m-tile 1 reads the up rows, `rows` further on.
  const T* w_row[MT][2];
  bool w_ok[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = tile_row + g + 8 * h;
      w_ok[mt][h] = r < rows;
      w_row[mt][h] = w + (w_ok[mt][h] ? r + mt * rows : 0) * k_len;
    }
  const T* x_row[NT];
  bool x_ok[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int64_t t = nt * 8 + g;
    x_ok[nt] = t < args.t;
    x_row[nt] = x + (x_ok[nt] ? t : 0) * k_len;
  }

  float acc[MT][NT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;

  const uint4 zero = make_uint4(0, 0, 0, 0);
  const int64_t chunks = (k_len + kChunk - 1) / kChunk;
  // A warp's U chunks are consecutive (U * 64 contiguous bytes of each row it reads).
  auto load_w = [&](int64_t group, uint4(&wv)[U][MT][2]) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t k0 = (group * U + u) * kChunk + 8 * c;
      const bool in = k0 < k_len;  // K % 8 == 0: a thread's 8 values are all in or all out
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          wv[u][mt][h] = in && w_ok[mt][h] ? load_stream(w_row[mt][h] + k0) : zero;
    }
  };
  // x is read by every block of the grid: through L1 (.nc) co-resident blocks share it
  // (at 32 tokens x is twice the weight tile's bytes). With a programmatic launch this
  // kernel starts before the one writing x ends, so x then goes through L2 only (.cg):
  // no line of it may come from a read before that kernel's end.
  const bool x_via_l1 = !args.programmatic;
  auto load_x_and_multiply = [&](int64_t group, const uint4(&wv)[U][MT][2]) {
    uint4 xv[U][NT];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t k0 = (group * U + u) * kChunk + 8 * c;
      const bool in = k0 < k_len;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
        xv[u][nt] = !(in && x_ok[nt]) ? zero
                    : x_via_l1        ? __ldg(reinterpret_cast<const uint4*>(x_row[nt] + k0))
                                      : __ldcg(reinterpret_cast<const uint4*>(x_row[nt] + k0));
    }
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          const uint4 a = wv[u][mt][0], b = wv[u][mt][1], v = xv[u][nt];
          Mma<T>::run(acc[mt][nt], a.x, b.x, a.y, b.y, v.x, v.y);
          Mma<T>::run(acc[mt][nt], a.z, b.z, a.w, b.w, v.z, v.w);
        }
  };

  // The weights never depend on the previous kernel: the first group's loads go out
  // before waiting for it (a programmatic launch; without one the wait returns at once),
  // so they overlap its tail and this kernel's launch.
  {
    uint4 wv[U][MT][2];
    load_w(warp, wv);
    grid_dependency_wait();
    if (int64_t(warp) * U < chunks) load_x_and_multiply(warp, wv);
  }
  for (int64_t group = warp + kWarps; group * U < chunks; group += kWarps) {
    uint4 wv[U][MT][2];
    load_w(group, wv);
    load_x_and_multiply(group, wv);
  }

  // The 8 warps' partial sums meet in shared memory: [warp][mt][nt][lane] float4.
  __shared__ float4 partial[kWarps][MT][NT][32];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
      partial[warp][mt][nt][lane] =
          make_float4(acc[mt][nt][0], acc[mt][nt][1], acc[mt][nt][2], acc[mt][nt][3]);
  __syncthreads();

  // One thread per (nt, lane): it owns rows g, g + 8 and tokens 2c, 2c + 1 of tile nt.
  for (int i = threadIdx.x; i < NT * 32; i += blockDim.x) {
    const int nt = i / 32, l = i % 32, lg = l / 4, lc = l % 4;
    float sum[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      float4 s = partial[0][mt][nt][l];
#pragma unroll
      for (int wi = 1; wi < kWarps; ++wi) {
        const float4 p = partial[wi][mt][nt][l];
        s.x += p.x;
        s.y += p.y;
        s.z += p.z;
        s.w += p.w;
      }
      sum[mt][0] = s.x;
      sum[mt][1] = s.y;
      sum[mt][2] = s.z;
      sum[mt][3] = s.w;
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t row = tile_row + lg + 8 * (e / 2);
      const int64_t t = nt * 8 + 2 * lc + e % 2;
      if (row >= rows || t >= args.t) continue;
      if constexpr (MT == 2) {
        // silu(gate) * up, each rounded to storage precision first as separate ops round them.
        const float gate = round_to<T>(sum[0][e]), up = round_to<T>(sum[1][e]);
        static_cast<T*>(args.out[0])[t * rows + row] =
            from_f32<T>(gate / (1.0f + __expf(-gate)) * up);
      } else {
        // Selects, not indexing: a dynamic index into the parameters would copy them to
        // local memory.
        const bool p0 = row < args.part_end[0], p1 = !p0 && row < args.part_end[1];
        const int64_t start = p0 ? 0 : p1 ? args.part_end[0] : args.part_end[1];
        const int64_t width = (p0   ? args.part_end[0]
                               : p1 ? args.part_end[1]
                                    : args.part_end[2]) -
                              start;
        void* out = p0 ? args.out[0] : p1 ? args.out[1] : args.out[2];
        const void* bias = p0 ? args.bias[0] : p1 ? args.bias[1] : args.bias[2];
        float v = sum[0][e];
        if (bias) v += to_f32(static_cast<const T*>(bias)[row - start]);
        if constexpr (kOutF32)
          static_cast<float*>(out)[t * width + row - start] = v;
        else
          static_cast<T*>(out)[t * width + row - start] = from_f32<T>(v);
      }
    }
  }
}

template <typename T, int NT, bool kGated, bool kOutF32>
void launch_typed(const SkinnyGemmArgs& args, cudaStream_t stream) {
  constexpr int MT = kGated ? 2 : 1;
  // Loads in flight per thread: U * (2 * MT + NT) of 16 bytes, within the register budget.
  constexpr int U = (2 * MT + NT) <= 3 ? 4 : (2 * MT + NT) <= 6 ? 2 : 1;
  const int64_t tiles = (args.rows + kTileRows - 1) / kTileRows;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(unsigned(tiles));
  config.blockDim = dim3(kWarps * 32);
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = args.programmatic ? 1 : 0;
  RELAYLLM_CUDA_CHECK(cudaLaunchKernelEx(&config, skinny_gemm_kernel<T, NT, MT, U, kOutF32>, args));
}

template <typename T, bool kGated, bool kOutF32>
void launch_tiles(const SkinnyGemmArgs& args, cudaStream_t stream) {
  switch ((args.t + 7) / 8) {
    case 1:
      return launch_typed<T, 1, kGated, kOutF32>(args, stream);
    case 2:
      return launch_typed<T, 2, kGated, kOutF32>(args, stream);
    case 3:
      return launch_typed<T, 3, kGated, kOutF32>(args, stream);
    default:
      return launch_typed<T, 4, kGated, kOutF32>(args, stream);
  }
}

template <typename T>
void launch_dtype(const SkinnyGemmArgs& args, cudaStream_t stream) {
  if (args.gated)
    launch_tiles<T, true, false>(args, stream);
  else if (args.out_f32)
    launch_tiles<T, false, true>(args, stream);
  else
    launch_tiles<T, false, false>(args, stream);
}

}  // namespace

bool skinny_gemm_fits(int64_t t, int64_t k, const void* x, const void* w) {
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return t >= 1 && t <= kSkinnyGemmMaxRows && k > 0 && k % 8 == 0 && aligned(x) && aligned(w);
}

void launch_skinny_gemm(const SkinnyGemmArgs& args, cudaStream_t stream) {
  if (args.t == 0 || args.rows == 0) return;
  if (args.dtype == DType::kBF16)
    launch_dtype<__nv_bfloat16>(args, stream);
  else
    launch_dtype<__half>(args, stream);
  RELAYLLM_CUDA_LAUNCH_CHECK("skinny_gemm");
}

}  // namespace relayllm::cuda
