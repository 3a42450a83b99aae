// FP8 linear op helpers: per-token activation quantization to e4m3 and the rescale epilogue.
// Both are memory-bound single passes. The conversion is __nv_cvt_float_to_fp8 with
// __NV_SATFINITE (round to nearest even, saturate to +-448), which common/fp8.h reproduces
// on the host bit for bit, and the scale is computed as on the host (absmax / 448, then
// x * (1 / s)) so the CPU reference quantizes to the same codes.
#include <cuda_fp8.h>

#include <type_traits>

#include "relayllm/backend/cuda/cuda_check.cuh"
#include "relayllm/backend/cuda/cuda_dispatch.cuh"
#include "relayllm/backend/cuda/cuda_fp8.cuh"

namespace relayllm::cuda {
namespace {

constexpr int kQuantThreads = 512;
constexpr int kThreads = 256;

__device__ __forceinline__ float block_max(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) / 32;
  v = threadIdx.x < warps ? scratch[threadIdx.x] : 0.0f;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (threadIdx.x == 0) scratch[0] = v;
  __syncthreads();
  return scratch[0];
}

// A token row's dynamic scale: absmax / 448 over the row (1 for an all-zero row). All threads
// of the block must call it (block_max synchronizes).
template <typename T>
__device__ __forceinline__ float dynamic_scale(const T* row, int64_t k, float* scratch) {
  float m = 0;
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x) m = fmaxf(m, fabsf(to_f32(row[i])));
  m = block_max(m, scratch);
  return m > 0.0f ? m / 448.0f : 1.0f;
}

// A token row's e4m3 codes at `scale`, spread over the block's threads.
template <typename T>
__device__ __forceinline__ void quantize_row(const T* row, int64_t k, float scale, uint8_t* out) {
  const float inv = 1.0f / scale;
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x)
    out[i] = uint8_t(__nv_cvt_float_to_fp8(to_f32(row[i]) * inv, __NV_SATFINITE, __NV_E4M3));
}

template <typename T>
__global__ void quantize_rows_kernel(const T* x, int64_t k, const float* static_scale,
                                     uint8_t* codes, float* scales) {
  __shared__ float scratch[32];
  const T* row = x + int64_t(blockIdx.x) * k;
  uint8_t* out = codes + int64_t(blockIdx.x) * k;
  float scale = *static_scale;
  if (scale == 0.0f) scale = dynamic_scale(row, k, scratch);
  if (threadIdx.x == 0) scales[blockIdx.x] = scale;
  quantize_row(row, k, scale, out);
}

template <typename T>
__global__ void rescale_kernel(const float* acc, const float* row_scales, const float* col_scales,
                               int64_t rows, int64_t n, T* out) {
  const int64_t total = rows * n;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / n, c = i - r * n;
    out[i] = from_f32<T>((row_scales[r] * col_scales[c]) * acc[i]);
  }
}

// 16 e4m3 codes (one 16-byte load) to fp32: pairs through the hardware's fp8x2 -> half2
// conversion (sm_89+), then half -> float; both steps are exact.
__device__ __forceinline__ void decode16(const uint4& v, float* out) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int w = 0; w < 4; ++w)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const __half2_raw raw = __nv_cvt_fp8x2_to_halfraw2(
          __nv_fp8x2_storage_t((words[w] >> (16 * h)) & 0xffffu), __NV_E4M3);
      const float2 f = __half22float2(__half2(raw));
      out[4 * w + 2 * h] = f.x;
      out[4 * w + 2 * h + 1] = f.y;
    }
}

// A lane's share of a weight row's dot products with kTokens rows of activation codes xq (row
// stride k), in fp32: the row's 16-byte chunks lane, lane + 32, ... (warp_sum adds the lanes'
// shares). kGlobalX: xq is in global memory and read through the read-only cache (__ldg);
// otherwise it is in shared memory.
template <int kTokens, bool kGlobalX>
__device__ __forceinline__ void warp_row_dots(const uint8_t* w_row, const uint8_t* xq, int64_t k,
                                              int lane, float (&acc)[kTokens]) {
  const uint4* wr = reinterpret_cast<const uint4*>(w_row);
  const int64_t chunks = k / 16;
#pragma unroll
  for (int t = 0; t < kTokens; ++t) acc[t] = 0.0f;
#pragma unroll 4
  for (int64_t c = lane; c < chunks; c += 32) {
    float wf[16], xf[16];
    decode16(__ldg(wr + c), wf);
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      const uint4* xc = reinterpret_cast<const uint4*>(xq + t * k) + c;
      if constexpr (kGlobalX)
        decode16(__ldg(xc), xf);
      else
        decode16(*xc, xf);
#pragma unroll
      for (int i = 0; i < 16; ++i) acc[t] = fmaf(wf[i], xf[i], acc[t]);
    }
  }
}

// The sum of v over the warp's lanes, in every lane.
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// out[t, row] for kTokens activation rows: one warp per weight row, each lane streaming 16-byte
// chunks of the row (the weight is read once, the activation codes come from L1/L2), products
// summed in fp32, then a warp reduction and both scales. A decode step's linear op is a
// matrix-vector product that only has to stream the weight; this kernel does that at full
// memory width instead of padding the tokens to a tensor-core tile.
template <typename T, int kTokens>
__global__ void gemv_kernel(const uint8_t* w, const float* w_scales, const uint8_t* xq,
                            const float* x_scales, int64_t n, int64_t k, T* out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + warp;
  if (row >= n) return;
  float acc[kTokens];
  warp_row_dots<kTokens, true>(w + row * k, xq, k, lane, acc);
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    const float v = warp_sum(acc[t]);
    if (lane == 0) out[t * n + row] = from_f32<T>((x_scales[t] * w_scales[row]) * v);
  }
}

// The decode form of the whole FP8 linear op in one launch, for kTokens rows of 16-bit x:
// every CTA quantizes x itself (the per-token max is order-independent and the scale and codes
// are computed as in quantize_rows_kernel, so every CTA gets the same codes) into shared memory,
// then its warps stream one weight row each as gemv_kernel does. A decode step runs seven FP8
// linear ops per layer; folding the quantization in saves a launch and a round trip each.
template <typename T, int kTokens>
__global__ void fused_gemv_kernel(const T* x, const float* static_scale, const uint8_t* w,
                                  const float* w_scales, int64_t n, int64_t k, T* out) {
  extern __shared__ uint4 x_codes_smem[];  // kTokens * k codes
  uint8_t* xq = reinterpret_cast<uint8_t*>(x_codes_smem);
  __shared__ float scratch[32];
  __shared__ float sx[kTokens];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + warp;
  const bool active = r < n;
  const uint4* wr = reinterpret_cast<const uint4*>(w + (active ? r : 0) * k);
  const int64_t chunks = k / 16;
  // The first chunks of this warp's weight row are requested before the quantization below,
  // so their memory latency overlaps it: a decode op's row is only 8-22 chunks per lane, and
  // without this the quantization and the loads ran one after the other (35-52% of the copy
  // bandwidth on an H100).
  constexpr int kPrefetch = 8;
  uint4 pre[kPrefetch];
#pragma unroll
  for (int u = 0; u < kPrefetch; ++u) {
    const int64_t c = lane + 32 * u;
    pre[u] = active && c < chunks ? __ldg(wr + c) : make_uint4(0, 0, 0, 0);
  }
  // The activation rows, 8 values (16 bytes) per load: x is 16-byte aligned and k a multiple of
  // 16 (launch_fp8_fused_gemv checks).
  static_assert(sizeof(T) == 2, "16-bit activations");
  const int64_t k8 = k / 8;
  for (int t = 0; t < kTokens; ++t) {
    const uint4* row = reinterpret_cast<const uint4*>(x + t * k);
    float scale = *static_scale;
    if (scale == 0.0f) {
      float m = 0;
      for (int64_t i = threadIdx.x; i < k8; i += blockDim.x) {
        const uint4 raw = row[i];
        const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int j = 0; j < 8; ++j) m = fmaxf(m, fabsf(to_f32(v[j])));
      }
      m = block_max(m, scratch);
      scale = m > 0.0f ? m / 448.0f : 1.0f;
    }
    if (threadIdx.x == 0) sx[t] = scale;
    const float inv = 1.0f / scale;
    for (int64_t i = threadIdx.x; i < k8; i += blockDim.x) {
      const uint4 raw = row[i];
      const T* v = reinterpret_cast<const T*>(&raw);
      uint32_t half_codes[2] = {0, 0};
#pragma unroll
      for (int j = 0; j < 8; ++j)
        half_codes[j / 4] |=
            uint32_t(__nv_cvt_float_to_fp8(to_f32(v[j]) * inv, __NV_SATFINITE, __NV_E4M3))
            << (8 * (j % 4));
      reinterpret_cast<uint2*>(xq + t * k)[i] = make_uint2(half_codes[0], half_codes[1]);
    }
    __syncthreads();  // scratch is reused by the next token's reduction; xq is read below
  }
  if (!active) return;
  float acc[kTokens] = {};
  auto add = [&](const uint4& wv, int64_t c) {
    float wf[16], xf[16];
    decode16(wv, wf);
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      decode16(reinterpret_cast<const uint4*>(xq + t * k)[c], xf);
#pragma unroll
      for (int i = 0; i < 16; ++i) acc[t] = fmaf(wf[i], xf[i], acc[t]);
    }
  };
#pragma unroll
  for (int u = 0; u < kPrefetch; ++u)
    if (lane + 32 * u < chunks) add(pre[u], lane + 32 * u);
#pragma unroll 4
  for (int64_t c = lane + 32 * kPrefetch; c < chunks; c += 32) add(__ldg(wr + c), c);
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    const float v = warp_sum(acc[t]);
    if (lane == 0) out[t * n + r] = from_f32<T>((sx[t] * w_scales[r]) * v);
  }
}

}  // namespace

void launch_quantize_fp8_rows(DType dtype, const void* x, int64_t rows, int64_t k,
                              const float* static_scale, uint8_t* codes, float* scales,
                              cudaStream_t stream) {
  if (rows == 0) return;
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    quantize_rows_kernel<T><<<unsigned(rows), kQuantThreads, 0, stream>>>(
        static_cast<const T*>(x), k, static_scale, codes, scales);
  });
  RELAYLLM_CUDA_LAUNCH_CHECK("quantize_fp8_rows");
}

void launch_fp8_rescale(DType dtype, const float* acc, const float* row_scales,
                        const float* col_scales, int64_t rows, int64_t n, void* out,
                        cudaStream_t stream) {
  const int64_t total = rows * n;
  if (total == 0) return;
  const unsigned grid = unsigned(
      (total + kThreads - 1) / kThreads < 65536 ? (total + kThreads - 1) / kThreads : 65536);
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    rescale_kernel<T>
        <<<grid, kThreads, 0, stream>>>(acc, row_scales, col_scales, rows, n, static_cast<T*>(out));
  });
  RELAYLLM_CUDA_LAUNCH_CHECK("fp8_rescale");
}

void launch_fp8_gemv(DType dtype, const uint8_t* w, const float* w_scales, const uint8_t* xq,
                     const float* x_scales, int64_t tokens, int64_t n, int64_t k, void* out,
                     cudaStream_t stream) {
  if (tokens == 0 || n == 0) return;
  constexpr int kWarps = 4;  // rows per CTA
  const unsigned grid = unsigned((n + kWarps - 1) / kWarps);
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* o = static_cast<T*>(out);
    switch (tokens) {
      case 1:
        gemv_kernel<T, 1><<<grid, 32 * kWarps, 0, stream>>>(w, w_scales, xq, x_scales, n, k, o);
        break;
      case 2:
        gemv_kernel<T, 2><<<grid, 32 * kWarps, 0, stream>>>(w, w_scales, xq, x_scales, n, k, o);
        break;
      case 3:
        gemv_kernel<T, 3><<<grid, 32 * kWarps, 0, stream>>>(w, w_scales, xq, x_scales, n, k, o);
        break;
      case 4:
        gemv_kernel<T, 4><<<grid, 32 * kWarps, 0, stream>>>(w, w_scales, xq, x_scales, n, k, o);
        break;
      default:
        throw_message("fp8_gemv: 1 to 4 tokens");
    }
  });
  RELAYLLM_CUDA_LAUNCH_CHECK("fp8_gemv");
}

bool launch_fp8_fused_gemv(DType dtype, const void* x, const float* static_scale, const uint8_t* w,
                           const float* w_scales, int64_t tokens, int64_t n, int64_t k, void* out,
                           cudaStream_t stream) {
  const size_t smem = size_t(tokens) * size_t(k);
  if (tokens < 1 || tokens > kFp8GemvMaxTokens || smem > kFp8FusedGemvMaxSharedBytes ||
      dtype == DType::kF32 || k % 16 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0)
    return false;
  if (n == 0) return true;
  constexpr int kWarps = 8;  // rows per CTA: the x quantization is shared by 8 rows
  const unsigned grid = unsigned((n + kWarps - 1) / kWarps);
  bool launched = false;
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, float>) {
      const T* xt = static_cast<const T*>(x);
      T* o = static_cast<T*>(out);
      switch (tokens) {
        case 1:
          fused_gemv_kernel<T, 1>
              <<<grid, 32 * kWarps, smem, stream>>>(xt, static_scale, w, w_scales, n, k, o);
          break;
        case 2:
          fused_gemv_kernel<T, 2>
              <<<grid, 32 * kWarps, smem, stream>>>(xt, static_scale, w, w_scales, n, k, o);
          break;
        case 3:
          fused_gemv_kernel<T, 3>
              <<<grid, 32 * kWarps, smem, stream>>>(xt, static_scale, w, w_scales, n, k, o);
          break;
        default:
          fused_gemv_kernel<T, 4>
              <<<grid, 32 * kWarps, smem, stream>>>(xt, static_scale, w, w_scales, n, k, o);
          break;
      }
      launched = true;
    }
  });
  RELAYLLM_CUDA_LAUNCH_CHECK("fp8_fused_gemv");
  return launched;
}

}  // namespace relayllm::cuda
