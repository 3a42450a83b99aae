// Paged attention on tensor cores (mma.sync m16n8k16, fp32 accumulation), one
// kernel for own tokens (causal through per-slot visible lengths) and relay
// prefixes (every slot sees the whole prefix); partial results are combined by
// log-sum-exp in the item that finalizes an output or in a merge kernel.
//
// A persistent CTA runs work items one after another: NW warps each own 16 query
// slots; K/V tiles of KT tokens are gathered from the paged pool into shared
// memory with cp.async, STAGES deep across item boundaries, and every warp reads
// the same tile, so a tile's bytes leave device memory once for up to 16*NW
// queries. Scores and probabilities stay in registers (the S accumulator layout is
// exactly the A-operand layout of the P*V product). Rows of shared memory are
// padded by 16 bytes so that ldmatrix hits 8 different bank groups.
#include "relayllm/backend/cuda/cuda_attention.cuh"
#include "relayllm/backend/cuda/cuda_check.cuh"

#include <algorithm>
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

// A kernel's tile shape: NW warps of 16 query slots each, K/V tiles of KT tokens,
// STAGES tiles in flight (a cp.async ring).
template <int NW_, int KT_, int STAGES_>
struct TileShape {
  static constexpr int NW = NW_, KT = KT_, STAGES = STAGES_;
  static_assert(STAGES >= 2, "the ring needs a stage to compute and one to fill");
};

// Shared memory: two query-row buffers (items alternate between them), then the
// ring of STAGES stages of KT keys and KT values; rows padded by 16 bytes. Two query
// buffers, not one per stage, keep deep rings small: the loader may start an item
// only once the compute side has taken the queries of the item two before it.
template <int D, typename S>
struct StageLayout {
  static constexpr int kRows = 16 * S::NW;
  static constexpr int kLd = D + 8;  // padded row, in elements
  static constexpr int kQ = kRows * kLd;
  static constexpr int kRing = 2 * kQ;
  static constexpr int kStage = 2 * S::KT * kLd;
  static constexpr int kElems = kRing + S::STAGES * kStage;
};

template <int D, typename S>
constexpr size_t attention_smem_bytes() {
  return size_t(StageLayout<D, S>::kElems) * 2;
}

__device__ __forceinline__ int item_tiles(const AttentionItem& item, int kt) {
  return (item.kv_end - item.kv_begin + kt - 1) / kt;
}

// Waits until the grid this kernel was launched after (as a programmatic
// dependent) has finished and its writes are visible; a no-op otherwise.
__device__ __forceinline__ void wait_for_prior_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// A finalizing item starts a query row from the row's other partials (the splits
// of a relay prefix, written by the wide kernel) as if they were tiles already
// seen: m = the largest lse (log2 units), l = sum of 2^(lse - m), acc = sum of
// 2^(lse - m) * o. The tiles then continue the same online softmax, and the item's
// last tile writes the output. The partials' places come with the slot, so their
// loads are independent: one latency for all lse, then one per kBatch partials'
// o rows, all of whose loads are issued before the first is used. The CTA's ring
// stalls meanwhile: leaving the partials out (wrong results, timing only) saved
// 1-10 us of relay decode at own 128 (B = 32-128); batching the loads by four
// rather than two measured no different.
// Columns E, E+1 of acc are this lane's row; only lane tig 0 adds to l, as the
// lanes' l are summed at the end.
template <int D, int E>
__device__ __forceinline__ void start_from_partials(const AttentionArgs& args, const QuerySlot& slot,
                                                    float (&acc)[D / 8][4], float& m, float& l, int tig) {
  const int count = slot.prefix_count;
  float mx = -INFINITY;
#pragma unroll 8
  for (int j = 0; j < count; ++j) mx = fmaxf(mx, args.partial_lse[slot.prefix_first + j * slot.prefix_stride]);
  if (mx == -INFINITY) return;  // no other partial (or none with mass)
  mx *= kLog2e;
  float sum = 0.0f;
  constexpr int kBatch = 4;
  for (int j0 = 0; j0 < count; j0 += kBatch) {
    float w[kBatch];
    float2 v[kBatch][D / 8];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const bool live = j0 + b < count;
      const int idx = slot.prefix_first + (live ? j0 + b : 0) * slot.prefix_stride;
      w[b] = live ? exp2f(args.partial_lse[idx] * kLog2e - mx) : 0.0f;
      const float* src = args.partial_o + int64_t(idx) * D + tig * 2;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) v[b][n] = *reinterpret_cast<const float2*>(src + n * 8);
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      sum += w[b];
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        acc[n][E] += w[b] * v[b][n].x;
        acc[n][E + 1] += w[b] * v[b][n].y;
      }
    }
  }
  m = mx;
  l = tig == 0 ? sum : 0.0f;
}

// A persistent CTA streams the tiles of its items through one cp.async ring,
// crossing item boundaries: the first tiles of the next item are in flight while
// the current one finishes, so short items (a decode row's own tokens, a split of
// a prefix) cost no pipeline start each. Items are claimed from a cursor: a CTA's
// first item is its block index, later ones are claimed a few tiles before the
// loader needs them. The grid need not match the item count, so one captured
// launch serves every step.
//
// Every decision below depends only on values all threads share, so the CTA walks
// the loop in lockstep.
template <typename T, int D, typename S>
__global__ void __launch_bounds__(S::NW * 32)
paged_attention_kernel(AttentionArgs args, const AttentionItem* items, const int32_t* count, int32_t* cursor) {
  constexpr int NW = S::NW, KT = S::KT, STAGES = S::STAGES;
  using L = StageLayout<D, S>;
  constexpr int kRows = L::kRows, kLd = L::kLd;
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  // Only narrow items finalize (attention_work.cc); the wide kernel is spared the code.
  constexpr bool kMayFinalize = NW * 16 == kNarrowSlots;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* const smem = reinterpret_cast<T*>(smem_raw);
  // Item of the tile in each stage; -1: the stream is over, -2: nothing this time.
  __shared__ int s_stage_item[STAGES];
  __shared__ int s_stage_tile[STAGES];
  __shared__ int s_claim;

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Lets the next kernel in the stream (the narrow items, launched as a programmatic
  // dependent) take multiprocessors as this grid's CTAs retire; it waits for this
  // grid's results before it reads them.
  asm volatile("griddepcontrol.launch_dependents;");
#endif

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, tig = lane % 4;
  const T* q = static_cast<const T*>(args.q);
  const T* kc = static_cast<const T*>(args.k_cache);
  const T* vc = static_cast<const T*>(args.v_cache);
  const int64_t token_stride = int64_t(args.num_kv_heads) * D;
  const int total = *count;

  // The loader: the item whose tiles it issues, and the next one once claimed.
  int ld_index = blockIdx.x;
  AttentionItem ld = ld_index < total ? items[ld_index] : AttentionItem{};
  int ld_tile = 0, ld_tiles = ld_index < total ? item_tiles(ld, KT) : 0;
  int next_index = INT_MAX;
  AttentionItem next{};
  // A claim takes three issues (the atomic, thread 0's store of its result, every
  // thread's read after a barrier), so it starts kClaimAhead tiles before the
  // current item's last: early enough that short items stream without a gap, late
  // enough that the cursor still balances the CTAs (claims made at the kernel's
  // start would deal all items out round-robin, long ones included).
  constexpr int kClaimAhead = 3;
  enum : int { kIdle, kAtomic, kStored, kFetched };
  int claim = kIdle, claimed = 0;
  // Items started by the loader and by the compute side (query buffer = seq % 2).
  int ld_seq = 0, cu_started = 0;

  // Runs right after a barrier: advances the claim, and issues the loader's next
  // tile into `stage` (or marks the stage empty).
  auto issue = [&](int stage) {
    if (claim == kStored) {
      next_index = s_claim;
      if (next_index < total) next = items[next_index];
      claim = kFetched;
    } else if (claim == kAtomic) {
      if (tid == 0) s_claim = claimed;
      claim = kStored;
    } else if (claim == kIdle && ld_index < total && ld_tiles - ld_tile <= kClaimAhead) {
      if (tid == 0) claimed = int(gridDim.x) + atomicAdd(cursor, 1);
      claim = kAtomic;
    }
    bool bubble = false;
    if (ld_index < total && ld_tile == ld_tiles) {
      if (claim == kFetched) {
        ld_index = next_index;
        ld = next;
        ld_tile = 0;
        ld_tiles = ld_index < total ? item_tiles(ld, KT) : 0;
        ++ld_seq;
        claim = kIdle;
      } else {
        bubble = true;  // the claim is still on its way (items shorter than kClaimAhead tiles)
      }
    }
    // The item's query buffer still holds the queries of the item two before, not
    // yet taken by the compute side (items shorter than the ring): wait.
    if (ld_index < total && ld_tile == 0 && cu_started < ld_seq - 1) bubble = true;
    const bool live = ld_index < total && !bubble;
    if (live) {
      T* const sq = smem + (ld_seq % 2) * L::kQ;
      T* const dk = smem + L::kRing + stage * L::kStage;
      T* const dv = dk + KT * kLd;
      // Addresses first, copies after: the block-table and slot lookups of a tile are
      // independent loads, and issuing them back to back costs one latency, not one
      // per chunk (this loop runs once per tile, on the CTA's critical path).
      constexpr int kThreads = NW * 32;
      if (ld_tile == 0) {
        // The item's query rows; rows past its slots are zero-filled.
        constexpr int kQPer = (kRows * kChunks + kThreads - 1) / kThreads;
        const T* src[kQPer];
#pragma unroll
        for (int j = 0; j < kQPer; ++j) {
          const int i = tid + j * kThreads, r = i / kChunks, c = i % kChunks;
          src[j] = i < kRows * kChunks && r < ld.slot_count
                       ? q + int64_t(args.slots[ld.slot_offset + r].row_head) * D + c * 8
                       : nullptr;
        }
#pragma unroll
        for (int j = 0; j < kQPer; ++j) {
          const int i = tid + j * kThreads;
          if (i < kRows * kChunks)
            cp_async_16(sq + (i / kChunks) * kLd + (i % kChunks) * 8, src[j] ? src[j] : q, src[j] ? 16 : 0);
        }
      }
      const int32_t* table = args.block_tables + ld.table_start;
      const int t0 = ld.kv_begin + ld_tile * KT;
      constexpr int kKvPer = (KT * kChunks + kThreads - 1) / kThreads;
      int32_t block_of[kKvPer];  // the pool block of each chunk's token, -1 past the range
#pragma unroll
      for (int j = 0; j < kKvPer; ++j) {
        const int i = tid + j * kThreads, t = t0 + i / kChunks;
        // Block sizes are almost always powers of two: a shift instead of a division.
        const int block = args.block_shift >= 0 ? t >> args.block_shift : t / args.block_size;
        block_of[j] = i < KT * kChunks && t < ld.kv_end ? table[block] : -1;
      }
#pragma unroll
      for (int j = 0; j < kKvPer; ++j) {
        const int i = tid + j * kThreads;
        if (i >= KT * kChunks) continue;
        const int r = i / kChunks, c = i % kChunks, t = t0 + r;
        const int at = r * kLd + c * 8;
        const bool valid = block_of[j] >= 0;
        const int within = args.block_shift >= 0 ? t & (args.block_size - 1) : t % args.block_size;
        const int64_t off = valid ? (int64_t(block_of[j]) * args.block_size + within) * token_stride +
                                        int64_t(ld.kv_head) * D + c * 8
                                  : 0;
        cp_async_16(dk + at, kc + off, valid ? 16 : 0);
        cp_async_16(dv + at, vc + off, valid ? 16 : 0);
      }
    }
    if (tid == 0) {
      s_stage_item[stage] = live ? ld_index : bubble ? -2 : -1;
      s_stage_tile[stage] = ld_tile;
    }
    if (live) ++ld_tile;
    cp_async_commit();  // one group per stream element, empty or not
  };

  // Prologue: elements 0 .. STAGES-2 of the stream (a barrier before each issue
  // makes thread 0's latest claim visible).
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    __syncthreads();
    issue(s);
  }

  // The compute side: the item being reduced and its running state.
  AttentionItem cu{};
  int cu_tiles = 0, vis0 = 0, vis1 = 0, row_head0 = -1, row_head1 = -1, unmasked_end = 0;
  bool warp_live = false;
  uint32_t qf[D / 16][4];
  float acc[D / 8][4];
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  const float scale_log2 = args.scale * kLog2e;

  for (int step = 0;; ++step) {
    // Every warp is done with element step-1, whose stage the issue below refills.
    // The refill goes out before the wait, so STAGES tiles are in flight while the
    // CTA waits for the oldest.
    __syncthreads();
    issue((step + STAGES - 1) % STAGES);
    // Element `step` has landed (STAGES + step groups are committed by now).
    cp_async_wait<STAGES - 1>();
    __syncthreads();  // its bytes and its stage's tags are visible to all
    const int stage = step % STAGES;
    const int item_index = s_stage_item[stage], tile = s_stage_tile[stage];
    if (item_index == -1) {  // the stream is over (every later element is empty too)
      // Completing implies the prior grid completed: later kernels (the merge, the
      // next layer) are ordered after this one only.
      if constexpr (kMayFinalize) wait_for_prior_grid();
      break;
    }
    if (item_index < 0) continue;  // a bubble
    const T* const tk = smem + L::kRing + stage * L::kStage;
    const T* const tv = tk + KT * kLd;

    if (tile == 0) {  // a new item: its query fragments, visibility and fresh state
      cu = items[item_index];
      cu_tiles = item_tiles(cu, KT);
      const int r0 = warp * 16 + g, r1 = r0 + 8;
      const QuerySlot slot0 = r0 < cu.slot_count ? args.slots[cu.slot_offset + r0] : QuerySlot{-1, 0};
      const QuerySlot slot1 = r1 < cu.slot_count ? args.slots[cu.slot_offset + r1] : QuerySlot{-1, 0};
      vis0 = slot0.visible;
      vis1 = slot1.visible;
      row_head0 = slot0.row_head;
      row_head1 = slot1.row_head;
      // Tiles that every live row of the warp sees whole need no mask (rows past the
      // item's slots are never written, so they do not limit it).
      const int live_min = __reduce_min_sync(
          0xffffffffu, min(r0 < cu.slot_count ? vis0 : INT_MAX, r1 < cu.slot_count ? vis1 : INT_MAX));
      unmasked_end = min(cu.kv_end, live_min);
      // A warp whose 16 rows are all past the item's slots (a 32-query prefix group in
      // a 64-row tile) only helps load: its sub-partition is free for other warps.
      warp_live = warp * 16 < cu.slot_count;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
      m0 = m1 = -INFINITY;
      l0 = l1 = 0.0f;
      if constexpr (kMayFinalize) {
        if (cu.flags & kItemFinalizes) {
          wait_for_prior_grid();  // the wide kernel's partials
          if (r0 < cu.slot_count) start_from_partials<D, 0>(args, slot0, acc, m0, l0, tig);
          if (r1 < cu.slot_count) start_from_partials<D, 2>(args, slot1, acc, m1, l1, tig);
        }
      }
      // The query fragments after the partials: their registers are free while the
      // partials' loads are in flight. (The buffer keeps this item's queries until
      // the loader starts the item two later, which it cannot before this one starts.)
      const int mi = lane / 8, rr = lane % 8;
      const T* const sq = smem + (cu_started % 2) * L::kQ;
      ++cu_started;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        ldmatrix_x4(qf[kk], sq + (warp * 16 + rr + (mi & 1) * 8) * kLd + kk * 16 + (mi >> 1) * 8);
    }
    if (!warp_live) continue;
    const int t0 = cu.kv_begin + tile * KT;

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
          bool in_range = t < cu.kv_end;
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

    if (tile + 1 < cu_tiles) continue;
    // The item's last tile: normalize and write its partial (o, lse) per slot.
    float t0sum = l0, t1sum = l1;
    t0sum += __shfl_xor_sync(0xffffffffu, t0sum, 1);
    t0sum += __shfl_xor_sync(0xffffffffu, t0sum, 2);
    t1sum += __shfl_xor_sync(0xffffffffu, t1sum, 1);
    t1sum += __shfl_xor_sync(0xffffffffu, t1sum, 2);
    const int r0 = warp * 16 + g, r1 = r0 + 8;
    const float inv0 = t0sum > 0 ? 1.0f / t0sum : 0.0f, inv1 = t1sum > 0 ? 1.0f / t1sum : 0.0f;
    const float lse0 = t0sum > 0 ? (m0 + log2f(t0sum)) * kLn2 : -INFINITY;
    const float lse1 = t1sum > 0 ? (m1 + log2f(t1sum)) * kLn2 : -INFINITY;
    if (kMayFinalize && (cu.flags & kItemFinalizes)) {  // the output itself (see start_from_partials)
      T* const out = static_cast<T*>(args.out);
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        if (r0 < cu.slot_count)
          *reinterpret_cast<uint32_t*>(out + int64_t(row_head0) * D + n * 8 + tig * 2) =
              Mma<T>::pack(acc[n][0] * inv0, acc[n][1] * inv0);
        if (r1 < cu.slot_count)
          *reinterpret_cast<uint32_t*>(out + int64_t(row_head1) * D + n * 8 + tig * 2) =
              Mma<T>::pack(acc[n][2] * inv1, acc[n][3] * inv1);
      }
      continue;
    }
    if (r0 < cu.slot_count) {
      float* o = args.partial_o + int64_t(cu.partial_offset + r0) * D;
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<float2*>(o + n * 8 + tig * 2) = make_float2(acc[n][0] * inv0, acc[n][1] * inv0);
      if (tig == 0) args.partial_lse[cu.partial_offset + r0] = lse0;
    }
    if (r1 < cu.slot_count) {
      float* o = args.partial_o + int64_t(cu.partial_offset + r1) * D;
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<float2*>(o + n * 8 + tig * 2) = make_float2(acc[n][2] * inv1, acc[n][3] * inv1);
      if (tig == 0) args.partial_lse[cu.partial_offset + r1] = lse1;
    }
  }
  // The last CTA out zeroes this kernel's cursor and count for the next launch
  // (every other CTA has made its last claim before it counted itself out).
  if (tid == 0) {
    __threadfence();
    if (atomicAdd(cursor + 2, 1) == int(gridDim.x) - 1) {
      cursor[0] = 0;
      cursor[2] = 0;
    }
  }
}

// The merge of the outputs no item finalized (split own tokens: a long context at a
// small batch, prefill rows): o = sum_i exp(lse_i - max) o_i / sum_i exp(lse_i - max).
// One CTA per output, its warps splitting the output's partials, so that the loads
// of all partials (up to kMergeWarps * kChunk) go out at once: a serial walk made
// this small kernel a chain of latencies (10 us for the 33 splits of an 8192-token
// context at batch 1). Each warp reduces its share, lane l owning elements
// [l * kPer, +kPer); the warps' (max, sum, o) are then combined in shared memory.
// CTAs stride over the outputs, as a graph's grid covers every possible output.
constexpr int kMergeWarps = 4;

template <typename T, int D>
__global__ void __launch_bounds__(kMergeWarps * 32) merge_kernel(AttentionArgs args) {
  constexpr int kPer = D >= 32 ? D / 32 : 1;
  constexpr int kChunk = 8;  // partials per warp per pass
  __shared__ float s_max[kMergeWarps], s_sum[kMergeWarps];
  __shared__ float s_o[kMergeWarps][D];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int outputs = args.item_counts[2];
  for (int index = blockIdx.x; index < outputs; index += gridDim.x) {
    const int output = args.merge_outputs[index];
    const int begin = args.merge_offsets[output], end = args.merge_offsets[output + 1];
    float o[kPer] = {};
    float mx = -INFINITY, total = 0.0f;
    for (int base = begin + warp * kChunk; base < end; base += kMergeWarps * kChunk) {
      const int n = min(kChunk, end - base);
      const int mine = args.merge_partials[base + min(lane, n - 1)];
      // Every load of the pass first (a partial past n repeats the first, weight 0).
      float lse[kChunk], v[kChunk][kPer];
#pragma unroll
      for (int j = 0; j < kChunk; ++j) {
        const int p = __shfl_sync(0xffffffffu, mine, j < n ? j : 0);
        lse[j] = j < n ? args.partial_lse[p] : -INFINITY;
        const float* src = args.partial_o + int64_t(p) * D + lane * kPer;
        if (lane * kPer < D) {
          if constexpr (kPer == 4) {
            const float4 x = *reinterpret_cast<const float4*>(src);
            v[j][0] = x.x, v[j][1] = x.y, v[j][2] = x.z, v[j][3] = x.w;
          } else {
#pragma unroll
            for (int k = 0; k < kPer; ++k) v[j][k] = src[k];
          }
        } else {
#pragma unroll
          for (int k = 0; k < kPer; ++k) v[j][k] = 0.0f;
        }
      }
      float pass_mx = mx;
#pragma unroll
      for (int j = 0; j < kChunk; ++j) pass_mx = fmaxf(pass_mx, lse[j]);
      if (pass_mx == -INFINITY) continue;  // nothing with mass yet
      const float rescale = mx == -INFINITY ? 0.0f : __expf(mx - pass_mx);
      total *= rescale;
#pragma unroll
      for (int k = 0; k < kPer; ++k) o[k] *= rescale;
#pragma unroll
      for (int j = 0; j < kChunk; ++j) {
        const float w = lse[j] == -INFINITY ? 0.0f : __expf(lse[j] - pass_mx);
        total += w;
#pragma unroll
        for (int k = 0; k < kPer; ++k) o[k] += w * v[j][k];
      }
      mx = pass_mx;
    }
    if (lane == 0) {
      s_max[warp] = mx;
      s_sum[warp] = total;
    }
#pragma unroll
    for (int k = 0; k < kPer; ++k)
      if (lane * kPer + k < D) s_o[warp][lane * kPer + k] = o[k];
    __syncthreads();
    float all_mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kMergeWarps; ++w) all_mx = fmaxf(all_mx, s_max[w]);
    T* dst = static_cast<T*>(args.out) + int64_t(output) * D;
    for (int e = threadIdx.x; e < D; e += blockDim.x) {
      float num = 0.0f, den = 0.0f;
#pragma unroll
      for (int w = 0; w < kMergeWarps; ++w) {
        const float f = s_max[w] == -INFINITY ? 0.0f : __expf(s_max[w] - all_mx);
        num += f * s_o[w][e];
        den += f * s_sum[w];
      }
      dst[e] = from_f32<T>(den > 0 ? num / den : 0.0f);
    }
    __syncthreads();  // shared memory is reused by the next output
  }
}

template <typename T, int D, typename S>
void launch_items(const AttentionArgs& args, const AttentionItem* items, int which, int grid, bool dependent,
                  cudaStream_t stream) {
  if (grid == 0) return;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(grid);
  config.blockDim = dim3(S::NW * 32);
  config.dynamicSmemBytes = attention_smem_bytes<D, S>();
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  if (dependent) {
    attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute.val.programmaticStreamSerializationAllowed = 1;
    config.attrs = &attribute;
    config.numAttrs = 1;
  }
  RELAYLLM_CUDA_CHECK(cudaLaunchKernelEx(&config, paged_attention_kernel<T, D, S>, args, items,
                                         args.item_counts + which, args.item_cursors + which));
}

// Tokens per K/V tile and tiles in flight; a build may override them
// (-DRELAYLLM_NARROW_KT=32 ...) to sweep them on a GPU.
#ifndef RELAYLLM_NARROW_KT
#define RELAYLLM_NARROW_KT 16
#endif
#ifndef RELAYLLM_NARROW_STAGES
#define RELAYLLM_NARROW_STAGES 2
#endif
#ifndef RELAYLLM_WIDE_KT
#define RELAYLLM_WIDE_KT 64
#endif
#ifndef RELAYLLM_WIDE_STAGES
#define RELAYLLM_WIDE_STAGES 2
#endif
#ifndef RELAYLLM_WIDE_MAX_PER_SM
#define RELAYLLM_WIDE_MAX_PER_SM 16
#endif

// The narrow kernel: one warp per CTA (16 query slots: a decode row's GQA group).
// Shared memory (the ring) bounds how many warps an SM holds, and the kernel is
// bound by memory latency, so short tiles with several in flight per warp beat
// long ones. The wide kernel: four warps, 64 query slots (relay prefixes).
using NarrowTile = TileShape<kNarrowSlots / 16, RELAYLLM_NARROW_KT, RELAYLLM_NARROW_STAGES>;
using WideTile = TileShape<kWideSlots / 16, RELAYLLM_WIDE_KT, RELAYLLM_WIDE_STAGES>;

template <typename T, int D>
struct Kernels {
  static constexpr auto narrow = paged_attention_kernel<T, D, NarrowTile>;
  static constexpr auto wide = paged_attention_kernel<T, D, WideTile>;
  static constexpr size_t narrow_smem = attention_smem_bytes<D, NarrowTile>();
  static constexpr size_t wide_smem = attention_smem_bytes<D, WideTile>();
};

template <typename T, int D>
AttentionOccupancy prepare() {
  using K = Kernels<T, D>;
  AttentionOccupancy occ;
  RELAYLLM_CUDA_CHECK(cudaFuncSetAttribute(K::narrow, cudaFuncAttributeMaxDynamicSharedMemorySize, int(K::narrow_smem)));
  RELAYLLM_CUDA_CHECK(cudaFuncSetAttribute(K::wide, cudaFuncAttributeMaxDynamicSharedMemorySize, int(K::wide_smem)));
  int n = 0;
  RELAYLLM_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, K::narrow, NarrowTile::NW * 32, K::narrow_smem));
  occ.narrow_per_sm = n;
  RELAYLLM_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, K::wide, WideTile::NW * 32, K::wide_smem));
  occ.wide_per_sm = std::min(n, RELAYLLM_WIDE_MAX_PER_SM);
  return occ;
}

template <typename T, int D>
void launch_all(const AttentionArgs& args, cudaStream_t stream) {
  // Wide first: finalizing narrow items read the wide items' partials.
  launch_items<T, D, WideTile>(args, args.wide, 1, args.wide_grid, false, stream);
  // As a programmatic dependent, the narrow grid starts on the multiprocessors the
  // wide grid's CTAs leave and streams its own tokens while the last wide CTAs
  // finish; it waits for the wide grid only where it reads the prefix partials.
  launch_items<T, D, NarrowTile>(args, args.narrow, 0, args.narrow_grid,
                                 args.dependent_launch && args.wide_grid > 0, stream);
  if (args.merge_grid == 0) return;
  merge_kernel<T, D><<<args.merge_grid, kMergeWarps * 32, 0, stream>>>(args);
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
  static void run(const AttentionArgs& args, cudaStream_t stream) { launch_all<T, D>(args, stream); }
};

struct Prepare {
  template <typename T, int D>
  static AttentionOccupancy run() { return prepare<T, D>(); }
};

}  // namespace

void launch_attention(const AttentionArgs& args, cudaStream_t stream) {
  dispatch<LaunchAll>(args.dtype, args.head_dim, args, stream);
}

AttentionOccupancy prepare_attention(DType dtype, int32_t head_dim) {
  return dispatch<Prepare>(dtype, head_dim);
}

}  // namespace relayllm::cuda
