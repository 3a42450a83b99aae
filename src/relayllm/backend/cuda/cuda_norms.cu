// RMSNorm and residual add + RMSNorm with each row held in registers: one 16-byte
// load per tensor and thread (up to kMaxVecs), every load issued before any is used.
// The loop kernels of cuda_elementwise.cu read a 4096-wide row in 8 dependent rounds
// per pass from one block, which at decode (one row per sequence) leaves the GPU
// waiting on latency; here a row costs about two round trips. Same rounding as the
// loop kernels: the residual is rounded to storage precision before the norm reads it.
#include <algorithm>
#include <cstdint>

#include "relayllm/backend/cuda/cuda_check.cuh"
#include "relayllm/backend/cuda/cuda_ops.cuh"

namespace relayllm::cuda {
namespace {

constexpr int kMaxVecs = 2;  // 16-byte vectors per thread: rows up to 1024 * 2 * 8 values

__device__ __forceinline__ void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ float block_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = threadIdx.x < blockDim.x / 32 ? scratch[threadIdx.x] : 0.0f;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x == 0) scratch[0] = v;
  __syncthreads();
  return scratch[0];
}

// residual (if kAdd) += x; out = rmsnorm(residual or x) * w. Rows of `vecs` 16-byte
// vectors; out may be x (each thread rewrites only what it read).
template <typename T, bool kAdd>
__global__ void __launch_bounds__(1024)
    norm_vec_kernel(T* residual, const T* x, const T* w, float eps, int vecs, T* out) {
  allow_dependent_launch();
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const uint4* xr = reinterpret_cast<const uint4*>(x) + row * vecs;
  uint4* rr = kAdd ? reinterpret_cast<uint4*>(residual) + row * vecs : nullptr;
  uint4 a[kMaxVecs], b[kMaxVecs], wv[kMaxVecs];
#pragma unroll
  for (int j = 0; j < kMaxVecs; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < vecs) {
      b[j] = xr[i];
      if constexpr (kAdd) a[j] = rr[i];
      wv[j] = __ldg(reinterpret_cast<const uint4*>(w) + i);
    }
  }
  float sum = 0;
#pragma unroll
  for (int j = 0; j < kMaxVecs; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i >= vecs) continue;
    T* pa = reinterpret_cast<T*>(&a[j]);
    const T* pb = reinterpret_cast<const T*>(&b[j]);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const T r = kAdd ? from_f32<T>(to_f32(pa[e]) + to_f32(pb[e])) : pb[e];
      pa[e] = r;
      const float f = to_f32(r);
      sum += f * f;
    }
    if constexpr (kAdd) rr[i] = a[j];
  }
  const float inv = rsqrtf(block_sum(sum, scratch) / float(vecs * 8) + eps);
  uint4* orow = reinterpret_cast<uint4*>(out) + row * vecs;
#pragma unroll
  for (int j = 0; j < kMaxVecs; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i >= vecs) continue;
    const T* pa = reinterpret_cast<const T*>(&a[j]);
    const T* pw = reinterpret_cast<const T*>(&wv[j]);
    uint4 o;
    T* po = reinterpret_cast<T*>(&o);
#pragma unroll
    for (int e = 0; e < 8; ++e) po[e] = from_f32<T>(to_f32(pa[e]) * inv * to_f32(pw[e]));
    orow[i] = o;
  }
}

bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <bool kAdd>
bool launch(DType dtype, void* residual, const void* x, const void* w, float eps, int64_t rows,
            int64_t n, void* out, cudaStream_t stream) {
  if (dtype == DType::kF32 || n % 8 != 0 || !aligned(x) || !aligned(w) || !aligned(out) ||
      (kAdd && !aligned(residual)))
    return false;
  const int64_t vecs = n / 8;
  const int64_t threads = std::min<int64_t>(1024, (vecs + 31) / 32 * 32);
  if (vecs > threads * kMaxVecs) return false;
  if (rows == 0) return true;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    norm_vec_kernel<T, kAdd><<<unsigned(rows), unsigned(threads), 0, stream>>>(
        static_cast<T*>(residual), static_cast<const T*>(x), static_cast<const T*>(w), eps,
        int(vecs), static_cast<T*>(out));
  };
  if (dtype == DType::kBF16)
    run(__nv_bfloat16{});
  else
    run(__half{});
  RELAYLLM_CUDA_LAUNCH_CHECK(kAdd ? "add_rmsnorm (registers)" : "rmsnorm (registers)");
  return true;
}

}  // namespace

bool launch_rmsnorm_registers(DType dtype, const void* x, const void* weight, float eps,
                              int64_t rows, int64_t n, void* out, cudaStream_t stream) {
  return launch<false>(dtype, nullptr, x, weight, eps, rows, n, out, stream);
}

bool launch_add_rmsnorm_registers(DType dtype, void* residual, const void* x, const void* weight,
                                  float eps, int64_t rows, int64_t n, void* out,
                                  cudaStream_t stream) {
  return launch<true>(dtype, residual, x, weight, eps, rows, n, out, stream);
}

}  // namespace relayllm::cuda
