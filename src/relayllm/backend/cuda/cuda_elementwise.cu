// Row-wise and elementwise kernels: memory-bound, one pass over their data each,
// fp32 arithmetic on 16-bit storage.
#include "relayllm/backend/cuda/cuda_check.cuh"
#include "relayllm/backend/cuda/cuda_dispatch.cuh"
#include "relayllm/backend/cuda/cuda_ops.cuh"

namespace relayllm::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float block_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  int warps = (blockDim.x + 31) / 32;
  v = threadIdx.x < warps ? scratch[threadIdx.x] : 0.0f;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x == 0) scratch[0] = v;
  __syncthreads();
  float total = scratch[0];
  __syncthreads();  // scratch is reused by the caller's next reduction
  return total;
}

// Lets a programmatic dependent (the skinny GEMM reading this kernel's output) start
// streaming its weights now; it waits for this kernel's end before reading the output.
__device__ __forceinline__ void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

template <typename T>
__global__ void embedding_kernel(const T* table, const int32_t* ids, int64_t hidden, T* out) {
  const T* src = table + int64_t(ids[blockIdx.x]) * hidden;
  T* dst = out + int64_t(blockIdx.x) * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = src[i];
}

// In place is allowed (out == x): each thread rewrites only the elements it read.
template <typename T>
__global__ void rmsnorm_kernel(const T* x, const T* w, float eps, int64_t n, T* out) {
  allow_dependent_launch();
  __shared__ float scratch[32];
  const T* xr = x + int64_t(blockIdx.x) * n;
  T* orow = out + int64_t(blockIdx.x) * n;
  float sum = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    float v = to_f32(xr[i]);
    sum += v * v;
  }
  float inv = rsqrtf(block_sum(sum, scratch) / float(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    orow[i] = from_f32<T>(to_f32(xr[i]) * inv * to_f32(w[i]));
}

// The residual is rounded to storage precision before the norm reads it, as a
// framework holding the residual stream in bf16 does.
template <typename T>
__global__ void add_rmsnorm_kernel(T* residual, const T* x, const T* w, float eps, int64_t n,
                                   T* out) {
  allow_dependent_launch();
  __shared__ float scratch[32];
  T* rr = residual + int64_t(blockIdx.x) * n;
  const T* xr = x + int64_t(blockIdx.x) * n;
  T* orow = out + int64_t(blockIdx.x) * n;
  float sum = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    T r = from_f32<T>(to_f32(rr[i]) + to_f32(xr[i]));
    rr[i] = r;
    float v = to_f32(r);
    sum += v * v;
  }
  float inv = rsqrtf(block_sum(sum, scratch) / float(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    orow[i] = from_f32<T>(to_f32(rr[i]) * inv * to_f32(w[i]));
}

template <typename T>
__global__ void rope_kernel(T* q, T* k, const float* cos_sin, const int32_t* positions, int64_t hq,
                            int64_t hk, int64_t d) {
  const int64_t row = blockIdx.x, half = d / 2;
  const float* cs = cos_sin + int64_t(positions[row]) * d;
  for (int64_t i = threadIdx.x; i < (hq + hk) * half; i += blockDim.x) {
    int64_t head = i / half, j = i % half;
    T* x = head < hq ? q + (row * hq + head) * d : k + (row * hk + head - hq) * d;
    float x1 = to_f32(x[j]), x2 = to_f32(x[j + half]), c = cs[j], s = cs[half + j];
    x[j] = from_f32<T>(x1 * c - x2 * s);
    x[j + half] = from_f32<T>(x2 * c + x1 * s);
  }
}

// rope_kernel and write_kv_kernel in one pass: the rotated k goes both back to k and
// into the pool, v straight into the pool. One element pair (or one v element) per
// thread, a row over grid.y: at decode a row is a few thousand independent loads, and
// a loop over them in one small block would wait for each in turn.
template <typename T>
__global__ void rope_write_kv_kernel(T* q, T* k, const T* v, const float* cos_sin,
                                     const int32_t* positions, const int64_t* slots, int64_t hq,
                                     int64_t hk, int64_t d, T* k_cache, T* v_cache) {
  const int64_t row = blockIdx.x, half = d / 2, row_size = hk * d, rotations = (hq + hk) * half;
  const int64_t i = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  const int64_t slot = slots[row];  // -1: a padding row, not stored
  if (i < rotations) {
    const float* cs = cos_sin + int64_t(positions[row]) * d;
    const int64_t head = i / half, j = i % half;
    const bool is_k = head >= hq;
    T* x = is_k ? k + row * row_size + (head - hq) * d : q + (row * hq + head) * d;
    const float x1 = to_f32(x[j]), x2 = to_f32(x[j + half]), c = cs[j], s = cs[half + j];
    const T r1 = from_f32<T>(x1 * c - x2 * s), r2 = from_f32<T>(x2 * c + x1 * s);
    x[j] = r1;
    x[j + half] = r2;
    if (is_k && slot >= 0) {
      T* dst = k_cache + slot * row_size + (head - hq) * d;
      dst[j] = r1;
      dst[j + half] = r2;
    }
  } else if (i < rotations + row_size && slot >= 0) {
    const int64_t j = i - rotations;
    v_cache[slot * row_size + j] = v[row * row_size + j];
  }
}

template <typename T>
__global__ void silu_mul_kernel(const T* gate, const T* up, int64_t n, T* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float g = to_f32(gate[i]);
    out[i] = from_f32<T>(g / (1.0f + __expf(-g)) * to_f32(up[i]));
  }
}

template <typename T>
__global__ void write_kv_kernel(const T* k, const T* v, const int64_t* slots, int64_t row_size,
                                T* k_cache, T* v_cache) {
  int64_t slot = slots[blockIdx.x];
  if (slot < 0) return;  // a padding row
  const T* ks = k + int64_t(blockIdx.x) * row_size;
  const T* vs = v + int64_t(blockIdx.x) * row_size;
  for (int64_t i = threadIdx.x; i < row_size; i += blockDim.x) {
    k_cache[slot * row_size + i] = ks[i];
    v_cache[slot * row_size + i] = vs[i];
  }
}

template <typename T>
__global__ void gather_rows_kernel(const T* x, const int32_t* rows_idx, int64_t n, T* out) {
  const T* src = x + int64_t(rows_idx[blockIdx.x]) * n;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) out[int64_t(blockIdx.x) * n + i] = src[i];
}

template <typename T>
__global__ void add_bias_kernel(T* out, const T* bias, int64_t rows, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_f32<T>(to_f32(out[i]) + to_f32(bias[i % n]));
}

template <typename T>
__global__ void to_f32_kernel(const T* x, int64_t n, float* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = to_f32(x[i]);
}

int grid_for(int64_t n) { return int(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535 * 4)); }

}  // namespace

void launch_embedding(DType dtype, const void* table, const int32_t* ids, int64_t rows,
                      int64_t hidden, void* out, cudaStream_t stream) {
  if (rows == 0) return;
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    embedding_kernel<T><<<rows, kThreads, 0, stream>>>(static_cast<const T*>(table), ids, hidden,
                                                       static_cast<T*>(out));
  });
  RELAYLLM_CUDA_LAUNCH_CHECK("embedding");
}

void launch_rmsnorm(DType dtype, const void* x, const void* weight, float eps, int64_t rows,
                    int64_t n, void* out, cudaStream_t stream) {
  if (rows == 0) return;
  int threads = n >= 1024 ? 512 : n >= 256 ? 256 : 64;
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    rmsnorm_kernel<T><<<rows, threads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(weight), eps, n, static_cast<T*>(out));
  });
  RELAYLLM_CUDA_LAUNCH_CHECK("rmsnorm");
}

void launch_add_rmsnorm(DType dtype, void* residual, const void* x, const void* weight, float eps,
                        int64_t rows, int64_t n, void* out, cudaStream_t stream) {
  if (rows == 0) return;
  int threads = n >= 1024 ? 512 : n >= 256 ? 256 : 64;
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    add_rmsnorm_kernel<T>
        <<<rows, threads, 0, stream>>>(static_cast<T*>(residual), static_cast<const T*>(x),
                                       static_cast<const T*>(weight), eps, n, static_cast<T*>(out));
  });
  RELAYLLM_CUDA_LAUNCH_CHECK("add_rmsnorm");
}

void launch_rope(DType dtype, void* q, void* k, const float* cos_sin, const int32_t* positions,
                 int64_t rows, int64_t hq, int64_t hk, int64_t d, cudaStream_t stream) {
  if (rows == 0) return;
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    rope_kernel<T><<<rows, 128, 0, stream>>>(static_cast<T*>(q), static_cast<T*>(k), cos_sin,
                                             positions, hq, hk, d);
  });
  RELAYLLM_CUDA_LAUNCH_CHECK("rope");
}

void launch_rope_write_kv(DType dtype, void* q, void* k, const void* v, const float* cos_sin,
                          const int32_t* positions, const int64_t* slots, int64_t rows, int64_t hq,
                          int64_t hk, int64_t d, void* k_cache, void* v_cache,
                          cudaStream_t stream) {
  if (rows == 0) return;
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const int64_t items = (hq + hk) * (d / 2) + hk * d;
    const dim3 grid(unsigned(rows), unsigned((items + kThreads - 1) / kThreads));
    rope_write_kv_kernel<T><<<grid, kThreads, 0, stream>>>(
        static_cast<T*>(q), static_cast<T*>(k), static_cast<const T*>(v), cos_sin, positions, slots,
        hq, hk, d, static_cast<T*>(k_cache), static_cast<T*>(v_cache));
  });
  RELAYLLM_CUDA_LAUNCH_CHECK("rope_write_kv");
}

void launch_silu_mul(DType dtype, const void* gate, const void* up, int64_t n, void* out,
                     cudaStream_t stream) {
  if (n == 0) return;
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    silu_mul_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(
        static_cast<const T*>(gate), static_cast<const T*>(up), n, static_cast<T*>(out));
  });
  RELAYLLM_CUDA_LAUNCH_CHECK("silu_mul");
}

void launch_write_kv(DType dtype, const void* k, const void* v, const int64_t* slots, int64_t rows,
                     int64_t row_size, void* k_cache, void* v_cache, cudaStream_t stream) {
  if (rows == 0) return;
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    write_kv_kernel<T><<<rows, 128, 0, stream>>>(static_cast<const T*>(k), static_cast<const T*>(v),
                                                 slots, row_size, static_cast<T*>(k_cache),
                                                 static_cast<T*>(v_cache));
  });
  RELAYLLM_CUDA_LAUNCH_CHECK("write_kv");
}

void launch_gather_rows(DType dtype, const void* x, const int32_t* rows_idx, int64_t rows,
                        int64_t n, void* out, cudaStream_t stream) {
  if (rows == 0) return;
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    gather_rows_kernel<T><<<rows, kThreads, 0, stream>>>(static_cast<const T*>(x), rows_idx, n,
                                                         static_cast<T*>(out));
  });
  RELAYLLM_CUDA_LAUNCH_CHECK("gather_rows");
}

void launch_add_bias(DType dtype, void* out, const void* bias, int64_t rows, int64_t n,
                     cudaStream_t stream) {
  if (rows * n == 0) return;
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    add_bias_kernel<T><<<grid_for(rows * n), kThreads, 0, stream>>>(
        static_cast<T*>(out), static_cast<const T*>(bias), rows, n);
  });
  RELAYLLM_CUDA_LAUNCH_CHECK("add_bias");
}

void launch_to_f32(DType dtype, const void* x, int64_t n, float* out, cudaStream_t stream) {
  if (n == 0) return;
  dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    to_f32_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(static_cast<const T*>(x), n, out);
  });
  RELAYLLM_CUDA_LAUNCH_CHECK("to_f32");
}

}  // namespace relayllm::cuda
