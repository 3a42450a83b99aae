// The skinny GEMM's form for 9-32 rows (cuda_skinny_gemm.cuh): out = x * W^T where x
// is no longer small next to a weight tile. cuda_skinny_gemm.cu's blocks split K
// among their warps, so every block reads all of x once per 16 weight rows: at 32
// tokens that is twice the tile's weight bytes, and the reads of x, not of W, bound it.
// Here a block's 8 warps take 8 row tiles (128 rows) over the same k and read x from
// shared memory, loaded once per block and step (x is 1/4 of the tile's weight bytes
// at 32 tokens). 128-row blocks are too few to fill the GPU at N = 4096, so K is split
// over gridDim.y blocks too: each writes its fp32 partial sums to a workspace, and the
// last to arrive (a counter per row block) adds them in a fixed order (deterministic)
// and runs the epilogue (row-range parts and bias, as the narrow form's).
#include <cstdint>
#include <type_traits>

#include "relayllm/backend/cuda/cuda_check.cuh"
#include "relayllm/backend/cuda/cuda_skinny_gemm.cuh"

namespace relayllm::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kBlockRows = kWarps * 16;
constexpr int kU = 4;            // chunks of 32 k per step
constexpr int kStepK = kU * 32;  // 128 k per step
// Shared-memory row stride (elements): 320 bytes, so the two tokens of a quarter warp's
// 16-byte reads fall on opposite halves of the banks.
constexpr int kXStride = kStepK + 32;

__device__ __forceinline__ uint4 load_stream(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Writes one output value through the row-range parts (as the narrow form's epilogue).
template <typename T, bool kOutF32>
__device__ __forceinline__ void store(const SkinnyGemmArgs& args, int64_t row, int64_t t, float v) {
  const bool p0 = row < args.part_end[0], p1 = !p0 && row < args.part_end[1];
  const int64_t start = p0 ? 0 : p1 ? args.part_end[0] : args.part_end[1];
  const int64_t width = (p0 ? args.part_end[0] : p1 ? args.part_end[1] : args.part_end[2]) - start;
  void* out = p0 ? args.out[0] : p1 ? args.out[1] : args.out[2];
  const void* bias = p0 ? args.bias[0] : p1 ? args.bias[1] : args.bias[2];
  if (bias) v += to_f32(static_cast<const T*>(bias)[row - start]);
  if constexpr (kOutF32)
    static_cast<float*>(out)[t * width + row - start] = v;
  else
    static_cast<T*>(out)[t * width + row - start] = from_f32<T>(v);
}

template <typename T, int NT, bool kOutF32>
__global__ void __launch_bounds__(kWarps * 32)
    skinny_wide_kernel(const SkinnyGemmArgs args, float* partials, int32_t* arrivals) {
  __shared__ __align__(16) T xs[NT * 8][kXStride];
  __shared__ bool s_last;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  const int64_t k_len = args.k, rows = args.rows, t_len = args.t;
  const int64_t tile_row = int64_t(blockIdx.x) * kBlockRows + warp * 16;
  const T* w = static_cast<const T*>(args.w);
  const T* x = static_cast<const T*>(args.x);
  const int splits = gridDim.y;

  const T* w_row[2];
  bool w_ok[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t r = tile_row + g + 8 * h;
    w_ok[h] = r < rows;
    w_row[h] = w + (w_ok[h] ? r : 0) * k_len;
  }
  float acc[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[nt][i] = 0.0f;

  // This block's steps of 128 k.
  const int64_t steps = (k_len + kStepK - 1) / kStepK;
  const int64_t per_split = (steps + splits - 1) / splits;
  const int64_t step_begin = int64_t(blockIdx.y) * per_split;
  const int64_t step_end = step_begin + per_split < steps ? step_begin + per_split : steps;
  const uint4 zero = make_uint4(0, 0, 0, 0);
  // x's tile of a step: NT * 8 tokens x 128 k = NT * 128 vectors of 16 bytes.
  constexpr int kXVecs = NT * 8 * (kStepK / 8);
  for (int64_t step = step_begin; step < step_end; ++step) {
    const int64_t k_step = step * kStepK;
    uint4 wv[kU][2];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int64_t k0 = k_step + u * 32 + 8 * c;
#pragma unroll
      for (int h = 0; h < 2; ++h)
        wv[u][h] = k0 < k_len && w_ok[h] ? load_stream(w_row[h] + k0) : zero;
    }
    for (int i = threadIdx.x; i < kXVecs; i += blockDim.x) {
      const int tok = i / (kStepK / 8), v = i % (kStepK / 8);
      const int64_t k0 = k_step + 8 * v;
      const uint4 val = tok < t_len && k0 < k_len
                            ? __ldcg(reinterpret_cast<const uint4*>(x + tok * k_len + k0))
                            : zero;
      *reinterpret_cast<uint4*>(&xs[tok][8 * v]) = val;
    }
    __syncthreads();
#pragma unroll
    for (int u = 0; u < kU; ++u)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const uint4 v = *reinterpret_cast<const uint4*>(&xs[nt * 8 + g][u * 32 + 8 * c]);
        const uint4 a = wv[u][0], b = wv[u][1];
        mma16816<T>(acc[nt], a.x, b.x, a.y, b.y, v.x, v.y);
        mma16816<T>(acc[nt], a.z, b.z, a.w, b.w, v.z, v.w);
      }
    __syncthreads();  // xs is refilled next step
  }

  // Fragment positions: rows g and g + 8 of the warp's tile, tokens 2c and 2c + 1.
  auto each = [&](auto&& f) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t row = tile_row + g + 8 * (e / 2), t = nt * 8 + 2 * c + e % 2;
        if (row < rows && t < t_len) f(row, t, acc[nt][e]);
      }
  };
  if (splits == 1) {
    each([&](int64_t row, int64_t t, float v) { store<T, kOutF32>(args, row, t, v); });
    return;
  }
  // partials: [split][t][rows] fp32; the last block of this row block sums them in split order.
  const int64_t plane = t_len * rows;
  each([&](int64_t row, int64_t t, float v) {
    partials[int64_t(blockIdx.y) * plane + t * rows + row] = v;
  });
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) s_last = atomicAdd(&arrivals[blockIdx.x], 1) == splits - 1;
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  each([&](int64_t row, int64_t t, float) {
    float sum = 0;
    for (int s = 0; s < splits; ++s) sum += __ldcg(&partials[int64_t(s) * plane + t * rows + row]);
    store<T, kOutF32>(args, row, t, sum);
  });
  if (threadIdx.x == 0) arrivals[blockIdx.x] = 0;  // ready for the next launch
}

template <typename T, bool kOutF32>
void launch_tiles(const SkinnyGemmArgs& args, dim3 grid, float* partials, int32_t* arrivals,
                  cudaStream_t stream) {
  switch ((args.t + 7) / 8) {
    case 1:
      skinny_wide_kernel<T, 1, kOutF32><<<grid, kWarps * 32, 0, stream>>>(args, partials, arrivals);
      break;
    case 2:
      skinny_wide_kernel<T, 2, kOutF32><<<grid, kWarps * 32, 0, stream>>>(args, partials, arrivals);
      break;
    case 3:
      skinny_wide_kernel<T, 3, kOutF32><<<grid, kWarps * 32, 0, stream>>>(args, partials, arrivals);
      break;
    default:
      skinny_wide_kernel<T, 4, kOutF32><<<grid, kWarps * 32, 0, stream>>>(args, partials, arrivals);
  }
}

}  // namespace

int64_t skinny_wide_splits(int64_t rows, int64_t k, int num_sms) {
  const int64_t row_blocks = (rows + kBlockRows - 1) / kBlockRows;
  const int64_t steps = (k + kStepK - 1) / kStepK;
  // About two blocks per multiprocessor, each at least two steps of k.
  int64_t splits = (2 * int64_t(num_sms) + row_blocks - 1) / row_blocks;
  splits = splits > kSkinnyWideMaxSplits ? kSkinnyWideMaxSplits : splits;
  splits = splits > steps / 2 ? steps / 2 : splits;
  return splits < 1 ? 1 : splits;
}

int64_t skinny_wide_row_blocks(int64_t rows) { return (rows + kBlockRows - 1) / kBlockRows; }

void launch_skinny_wide(const SkinnyGemmArgs& args, int64_t splits, float* partials,
                        int32_t* arrivals, cudaStream_t stream) {
  if (args.t == 0 || args.rows == 0) return;
  const dim3 grid(unsigned(skinny_wide_row_blocks(args.rows)), unsigned(splits));
  if (args.dtype == DType::kBF16) {
    if (args.out_f32)
      launch_tiles<__nv_bfloat16, true>(args, grid, partials, arrivals, stream);
    else
      launch_tiles<__nv_bfloat16, false>(args, grid, partials, arrivals, stream);
  } else {
    if (args.out_f32)
      launch_tiles<__half, true>(args, grid, partials, arrivals, stream);
    else
      launch_tiles<__half, false>(args, grid, partials, arrivals, stream);
  }
  RELAYLLM_CUDA_LAUNCH_CHECK("skinny_gemm (wide)");
}

}  // namespace relayllm::cuda
