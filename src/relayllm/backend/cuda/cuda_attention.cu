// Paged attention on tensor cores (mma.sync m16n8k16, fp32 accumulation), one
// kernel for own tokens (causal through per-slot visible lengths) and relay
// prefixes (every slot sees the whole prefix), followed by an lse merge.
//
// A CTA runs work items one after another: NW warps each own 16 query slots; K/V tiles of KT
// tokens are gathered from the paged pool into shared memory with cp.async, two
// stages deep, and every warp reads the same tile, so a tile's bytes leave device
// memory once for up to 16*NW queries. Scores and probabilities stay in registers
// (the S accumulator layout is exactly the A-operand layout of the P*V product).
// Rows of shared memory are padded by 16 bytes so that ldmatrix hits 8 different
// bank groups.
#include "relayllm/backend/cuda/cuda_attention.cuh"
#include "relayllm/backend/cuda/cuda_check.cuh"

#include <climits>

namespace relayllm::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <typename T>
struct Mma;

template <>
struct Mma<__nv_bfloat16> {
  __device__ __forceinline__ static void run(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
};

template <>
struct Mma<__half> {
  __device__ __forceinline__ static void run(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return uint32_t(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// 16 bytes global -> shared; src_bytes 0 fills zeros (tokens past the range).
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

template <int D, int NW, int KT>
constexpr size_t attention_smem_bytes() {
  return size_t(16 * NW + 4 * KT) * (D + 8) * 2;
}

template <typename T, int D, int NW, int KT>
__device__ __forceinline__ void run_item(const AttentionArgs& args, const AttentionItem& item) {
  constexpr int kRows = 16 * NW;
  constexpr int kLd = D + 8;        // padded row, in elements
  constexpr int kChunks = D / 8;    // 16-byte chunks per row
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sq = reinterpret_cast<T*>(smem_raw);
  T* sk = sq + kRows * kLd;         // [2][KT][kLd]
  T* sv = sk + 2 * KT * kLd;        // [2][KT][kLd]
  __shared__ int s_visible[kRows];

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, tig = lane % 4;
  const T* q = static_cast<const T*>(args.q);
  const T* kc = static_cast<const T*>(args.k_cache);
  const T* vc = static_cast<const T*>(args.v_cache);
  const int32_t* table = args.block_tables + item.table_start;
  const int64_t token_stride = int64_t(args.num_kv_heads) * D;

  for (int i = tid; i < kRows * kChunks; i += NW * 32) {
    int r = i / kChunks, c = i % kChunks;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r < item.slot_count)
      v = *reinterpret_cast<const uint4*>(q + int64_t(args.slots[item.slot_offset + r].row_head) * D + c * 8);
    *reinterpret_cast<uint4*>(sq + r * kLd + c * 8) = v;
  }
  for (int r = tid; r < kRows; r += NW * 32)
    s_visible[r] = r < item.slot_count ? args.slots[item.slot_offset + r].visible : 0;

  auto load_tile = [&](int tile, int stage) {
    const int t0 = item.kv_begin + tile * KT;
    T* dk = sk + stage * KT * kLd;
    T* dv = sv + stage * KT * kLd;
    for (int i = tid; i < KT * kChunks; i += NW * 32) {
      int r = i / kChunks, c = i % kChunks, t = t0 + r;
      bool valid = t < item.kv_end;
      int64_t off = 0;
      if (valid) {
        // Block sizes are almost always powers of two: a shift instead of a division
        // (this loop is a large share of the kernel's instructions).
        const int block = args.block_shift >= 0 ? t >> args.block_shift : t / args.block_size;
        const int within = args.block_shift >= 0 ? t & (args.block_size - 1) : t % args.block_size;
        int64_t slot = int64_t(table[block]) * args.block_size + within;
        off = slot * token_stride + int64_t(item.kv_head) * D + c * 8;
      }
      cp_async_16(dk + r * kLd + c * 8, kc + off, valid ? 16 : 0);
      cp_async_16(dv + r * kLd + c * 8, vc + off, valid ? 16 : 0);
    }
  };

  const int num_tiles = (item.kv_end - item.kv_begin + KT - 1) / KT;
  load_tile(0, 0);
  cp_async_commit();
  __syncthreads();  // Q and s_visible

  uint32_t qf[D / 16][4];
  {
    const int mi = lane / 8, rr = lane % 8;
    for (int kk = 0; kk < D / 16; ++kk)
      ldmatrix_x4(qf[kk], sq + (warp * 16 + rr + (mi & 1) * 8) * kLd + kk * 16 + (mi >> 1) * 8);
  }
  const int vis0 = s_visible[warp * 16 + g], vis1 = s_visible[warp * 16 + g + 8];
  // Tiles that every live row of the warp sees whole need no mask (rows past the
  // item's slots are never written, so they do not limit it).
  const int live_min = __reduce_min_sync(0xffffffffu, min(warp * 16 + g < item.slot_count ? vis0 : INT_MAX,
                                                          warp * 16 + g + 8 < item.slot_count ? vis1 : INT_MAX));
  const int unmasked_end = min(item.kv_end, live_min);
  const float scale_log2 = args.scale * kLog2e;

  float acc[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

  for (int tile = 0; tile < num_tiles; ++tile) {
    const int stage = tile & 1;
    if (tile + 1 < num_tiles) {
      load_tile(tile + 1, stage ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* tk = sk + stage * KT * kLd;
    const T* tv = sv + stage * KT * kLd;
    const int t0 = item.kv_begin + tile * KT;

    float s[KT / 8][4];
#pragma unroll
    for (int n = 0; n < KT / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
    {
      const int mi = lane / 8, rr = lane % 8;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
        for (int j = 0; j < KT / 16; ++j) {
          uint32_t b[4];
          ldmatrix_x4(b, tk + (j * 16 + rr + (mi >> 1) * 8) * kLd + kk * 16 + (mi & 1) * 8);
          Mma<T>::run(s[2 * j], qf[kk], b[0], b[1]);
          Mma<T>::run(s[2 * j + 1], qf[kk], b[2], b[3]);
        }
    }

    float mx0 = -INFINITY, mx1 = -INFINITY;
    if (t0 + KT <= unmasked_end) {
#pragma unroll
      for (int n = 0; n < KT / 8; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          s[n][e] *= scale_log2;
          s[n][e + 2] *= scale_log2;
          mx0 = fmaxf(mx0, s[n][e]);
          mx1 = fmaxf(mx1, s[n][e + 2]);
        }
    } else {
#pragma unroll
      for (int n = 0; n < KT / 8; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          int t = t0 + n * 8 + tig * 2 + e;
          bool in_range = t < item.kv_end;
          s[n][e] = in_range && t < vis0 ? s[n][e] * scale_log2 : -INFINITY;
          s[n][e + 2] = in_range && t < vis1 ? s[n][e + 2] * scale_log2 : -INFINITY;
          mx0 = fmaxf(mx0, s[n][e]);
          mx1 = fmaxf(mx1, s[n][e + 2]);
        }
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float new0 = fmaxf(m0, mx0), new1 = fmaxf(m1, mx1);
    // A row that has seen nothing yet keeps base 0 so exp2(-inf - base) is 0, never NaN.
    const float base0 = new0 == -INFINITY ? 0.0f : new0, base1 = new1 == -INFINITY ? 0.0f : new1;
    const float alpha0 = exp2f(m0 - base0), alpha1 = exp2f(m1 - base1);
    m0 = new0;
    m1 = new1;
    l0 *= alpha0;
    l1 *= alpha1;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      acc[n][0] *= alpha0;
      acc[n][1] *= alpha0;
      acc[n][2] *= alpha1;
      acc[n][3] *= alpha1;
    }
    uint32_t pf[KT / 16][4];
#pragma unroll
    for (int n = 0; n < KT / 8; ++n) {
      float p0 = exp2f(s[n][0] - base0), p1 = exp2f(s[n][1] - base0);
      float p2 = exp2f(s[n][2] - base1), p3 = exp2f(s[n][3] - base1);
      l0 += p0 + p1;
      l1 += p2 + p3;
      pf[n / 2][(n % 2) * 2] = Mma<T>::pack(p0, p1);
      pf[n / 2][(n % 2) * 2 + 1] = Mma<T>::pack(p2, p3);
    }
    {
      const int mi = lane / 8, rr = lane % 8;
#pragma unroll
      for (int ks = 0; ks < KT / 16; ++ks)
#pragma unroll
        for (int j = 0; j < D / 16; ++j) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, tv + (ks * 16 + rr + (mi & 1) * 8) * kLd + j * 16 + (mi >> 1) * 8);
          Mma<T>::run(acc[2 * j], pf[ks], b[0], b[1]);
          Mma<T>::run(acc[2 * j + 1], pf[ks], b[2], b[3]);
        }
    }
    __syncthreads();  // the next iteration's prefetch overwrites the stage just read
  }

  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const int r0 = warp * 16 + g, r1 = r0 + 8;
  const float inv0 = l0 > 0 ? 1.0f / l0 : 0.0f, inv1 = l1 > 0 ? 1.0f / l1 : 0.0f;
  if (r0 < item.slot_count) {
    float* o = args.partial_o + int64_t(item.partial_offset + r0) * D;
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<float2*>(o + n * 8 + tig * 2) = make_float2(acc[n][0] * inv0, acc[n][1] * inv0);
    if (tig == 0) args.partial_lse[item.partial_offset + r0] = l0 > 0 ? (m0 + log2f(l0)) * kLn2 : -INFINITY;
  }
  if (r1 < item.slot_count) {
    float* o = args.partial_o + int64_t(item.partial_offset + r1) * D;
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<float2*>(o + n * 8 + tig * 2) = make_float2(acc[n][2] * inv1, acc[n][3] * inv1);
    if (tig == 0) args.partial_lse[item.partial_offset + r1] = l1 > 0 ? (m1 + log2f(l1)) * kLn2 : -INFINITY;
  }
}

// A fixed grid of CTAs that claim items from a shared cursor until none is left:
// the grid need not match the item count, so one captured launch serves every
// step, and a CTA that drew short items takes more of them (the balance the
// hardware scheduler gave when each item was its own CTA).
template <typename T, int D, int NW, int KT>
__global__ void __launch_bounds__(NW * 32)
paged_attention_kernel(AttentionArgs args, const AttentionItem* items, const int32_t* count, int32_t* cursor) {
  __shared__ int s_next;
  const int total = *count;
  for (;;) {
    if (threadIdx.x == 0) s_next = atomicAdd(cursor, 1);
    __syncthreads();
    const int index = s_next;
    if (index >= total) return;
    run_item<T, D, NW, KT>(args, items[index]);
    __syncthreads();  // shared memory and s_next are reused by the next item
  }
}

// One warp per (row, head): o = sum_i exp(lse_i - max) o_i / sum_i exp(lse_i - max).
// The lanes fetch up to 32 partials' indices and lse at once and then stream their
// o rows with independent loads: a serial walk over the partials made this small
// kernel latency-bound (8 us for 1024 outputs of two partials each).
template <typename T, int D>
__global__ void merge_kernel(AttentionArgs args) {
  const int output = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (output >= args.num_outputs) return;
  const int begin = args.merge_offsets[output], end = args.merge_offsets[output + 1];
  constexpr int kPer = D >= 32 ? D / 32 : 1;  // lane owns elements [lane * kPer, lane * kPer + kPer)
  const bool lane_live = lane * kPer < D;
  float o[kPer] = {};
  float mx = -INFINITY, total = 0.0f;
  for (int base = begin; base < end; base += 32) {
    const int count = min(32, end - base);
    const int p = lane < count ? args.merge_partials[base + lane] : -1;
    const float lse = p >= 0 ? args.partial_lse[p] : -INFINITY;
    float chunk_mx = lse;
#pragma unroll
    for (int m = 16; m > 0; m /= 2) chunk_mx = fmaxf(chunk_mx, __shfl_xor_sync(0xffffffffu, chunk_mx, m));
    const float new_mx = fmaxf(mx, chunk_mx);
    if (new_mx == -INFINITY) continue;  // nothing visible yet
    const float rescale = mx == -INFINITY ? 0.0f : __expf(mx - new_mx);
    total *= rescale;
#pragma unroll
    for (int k = 0; k < kPer; ++k) o[k] *= rescale;
    float w = p >= 0 && lse != -INFINITY ? __expf(lse - new_mx) : 0.0f;
    float w_sum = w;
#pragma unroll
    for (int m = 16; m > 0; m /= 2) w_sum += __shfl_xor_sync(0xffffffffu, w_sum, m);
    total += w_sum;
#pragma unroll 4
    for (int j = 0; j < count; ++j) {
      const int pj = __shfl_sync(0xffffffffu, p, j);
      const float wj = __shfl_sync(0xffffffffu, w, j);
      if (!lane_live) continue;
      const float* src = args.partial_o + int64_t(pj) * D + lane * kPer;
      if constexpr (kPer == 4) {
        const float4 v = *reinterpret_cast<const float4*>(src);
        o[0] += wj * v.x;
        o[1] += wj * v.y;
        o[2] += wj * v.z;
        o[3] += wj * v.w;
      } else {
#pragma unroll
        for (int k = 0; k < kPer; ++k) o[k] += wj * src[k];
      }
    }
    mx = new_mx;
  }
  if (!lane_live) return;
  T* dst = static_cast<T*>(args.out) + int64_t(output) * D + lane * kPer;
  const float inv = total > 0 ? 1.0f / total : 0.0f;
#pragma unroll
  for (int k = 0; k < kPer; ++k) dst[k] = from_f32<T>(o[k] * inv);
}

template <typename T, int D, int NW, int KT>
void launch_items(const AttentionArgs& args, const AttentionItem* items, int which, int grid,
                  cudaStream_t stream) {
  if (grid == 0) return;
  constexpr size_t smem = attention_smem_bytes<D, NW, KT>();
  paged_attention_kernel<T, D, NW, KT><<<grid, NW * 32, smem, stream>>>(args, items, args.item_counts + which,
                                                                        args.item_cursors + which);
  RELAYLLM_CUDA_LAUNCH_CHECK("paged_attention");
}

// The narrow kernel: one warp per CTA. Shared memory (Q tile + two K/V stages)
// bounds how many warps an SM holds, and this kernel is bound by instruction
// latency, not bandwidth, so a 16-token tile (~22 KB, 9-10 warps per SM) beats 32
// (~39 KB, 5) and 64 (3). The wide kernel: four warps, 64 query slots, 64 tokens.
template <typename T, int D>
struct Kernels {
  static constexpr auto narrow = paged_attention_kernel<T, D, 1, 16>;
  static constexpr auto wide = paged_attention_kernel<T, D, 4, 64>;
  static constexpr size_t narrow_smem = attention_smem_bytes<D, 1, 16>();
  static constexpr size_t wide_smem = attention_smem_bytes<D, 4, 64>();
};

template <typename T, int D>
AttentionOccupancy prepare() {
  using K = Kernels<T, D>;
  AttentionOccupancy occ;
  RELAYLLM_CUDA_CHECK(cudaFuncSetAttribute(K::narrow, cudaFuncAttributeMaxDynamicSharedMemorySize, int(K::narrow_smem)));
  RELAYLLM_CUDA_CHECK(cudaFuncSetAttribute(K::wide, cudaFuncAttributeMaxDynamicSharedMemorySize, int(K::wide_smem)));
  int n = 0;
  RELAYLLM_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, K::narrow, 32, K::narrow_smem));
  occ.narrow_per_sm = n;
  RELAYLLM_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, K::wide, 128, K::wide_smem));
  occ.wide_per_sm = n;
  return occ;
}

template <typename T, int D>
void launch_all(const AttentionArgs& args, const AttentionStreams& streams) {
  static_assert(kNarrowSlots == 16 && kWideSlots == 64, "tile heights follow attention_work.h");
  cudaStream_t stream = streams.main;
  RELAYLLM_CUDA_CHECK(cudaMemsetAsync(args.item_cursors, 0, 2 * sizeof(int32_t), stream));
  const bool overlap = streams.side && args.narrow_grid > 0 && args.wide_grid > 0;
  if (overlap) {
    // Each launch alone leaves the GPU part idle at its start and tail; together they fill it.
    RELAYLLM_CUDA_CHECK(cudaEventRecord(streams.fork, stream));
    RELAYLLM_CUDA_CHECK(cudaStreamWaitEvent(streams.side, streams.fork, 0));
    launch_items<T, D, 4, 64>(args, args.wide, 1, args.wide_grid, streams.side);
    RELAYLLM_CUDA_CHECK(cudaEventRecord(streams.join, streams.side));
    launch_items<T, D, 1, 16>(args, args.narrow, 0, args.narrow_grid, stream);
    RELAYLLM_CUDA_CHECK(cudaStreamWaitEvent(stream, streams.join, 0));
  } else {
    launch_items<T, D, 1, 16>(args, args.narrow, 0, args.narrow_grid, stream);
    launch_items<T, D, 4, 64>(args, args.wide, 1, args.wide_grid, stream);
  }
  if (args.num_outputs == 0) return;
  constexpr int kWarps = 8;
  merge_kernel<T, D><<<(args.num_outputs + kWarps - 1) / kWarps, kWarps * 32, 0, stream>>>(args);
  RELAYLLM_CUDA_LAUNCH_CHECK("attention_merge");
}

// Calls Op::run<T, D>(args...) for the runtime dtype and head_dim.
template <typename Op, typename... Args>
auto dispatch(DType dtype, int32_t head_dim, Args&&... args) {
  if (head_dim != 16 && head_dim != 32 && head_dim != 64 && head_dim != 128)
    throw_message("cuda attention: head_dim must be 16, 32, 64 or 128");
  if (dtype != DType::kBF16 && dtype != DType::kF16)
    throw_message("cuda attention: KV must be bfloat16 or float16");
  auto by_dim = [&](auto tag) {
    using T = decltype(tag);
    if (head_dim == 16) return Op::template run<T, 16>(args...);
    if (head_dim == 32) return Op::template run<T, 32>(args...);
    if (head_dim == 64) return Op::template run<T, 64>(args...);
    return Op::template run<T, 128>(args...);
  };
  if (dtype == DType::kBF16) return by_dim(__nv_bfloat16{});
  return by_dim(__half{});
}

struct LaunchAll {
  template <typename T, int D>
  static void run(const AttentionArgs& args, const AttentionStreams& streams) { launch_all<T, D>(args, streams); }
};

struct Prepare {
  template <typename T, int D>
  static AttentionOccupancy run() { return prepare<T, D>(); }
};

}  // namespace

void launch_attention(const AttentionArgs& args, const AttentionStreams& streams) {
  dispatch<LaunchAll>(args.dtype, args.head_dim, args, streams);
}

AttentionOccupancy prepare_attention(DType dtype, int32_t head_dim) {
  return dispatch<Prepare>(dtype, head_dim);
}

}  // namespace relayllm::cuda
