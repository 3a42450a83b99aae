// Paged attention on tensor cores (mma.sync m16n8k16, fp32 accumulation), one
// persistent launch for own tokens (causal through per-slot visible lengths) and
// relay prefixes (every slot sees the whole prefix); the partial results of an
// output are combined by log-sum-exp at the end of the launch, by the CTAs that
// have run out of units.
//
// A CTA runs work units one after another (attention_work.h): NW warps each own 16
// query slots; K/V stages are gathered from the paged pool into shared memory with
// cp.async, STAGES deep across unit boundaries. In a wide unit every warp reads
// the same KT-token tile, so a tile's bytes leave device memory once for up to
// 16*NW queries; in a packed unit warp w streams its own item through its own
// KT/NW-token slice of each stage. Scores and probabilities stay in registers (the
// S accumulator layout is exactly the A-operand layout of the P*V product). Rows of
// shared memory are padded by 16 bytes so that ldmatrix hits 8 different bank groups.
#include <algorithm>
#include <climits>

#include "relayllm/backend/cuda/cuda_attention.cuh"
#include "relayllm/backend/cuda/cuda_check.cuh"
#include "relayllm/backend/cuda/cuda_mma.cuh"

namespace relayllm::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

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

// 16 bytes global -> shared; src_bytes 0 fills zeros (tokens past the range). The
// L2::128B hint has the whole 128-byte line fetched with its first chunk (the rest
// of a K or V row follows at once): 1% faster relay, 1-2% faster paged, measured.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)),
               "l"(src), "r"(src_bytes));
}

// A release add (every write that happens before it, this thread's and, through a
// __syncwarp, its warp's, is visible to whoever acquires the count) and an acquire
// load. Cheaper than a full fence by every lane before the add: 2% on average,
// up to 5%, measured.
__device__ __forceinline__ void red_release_add(int32_t* p, int32_t v) {
  asm volatile("red.release.gpu.global.add.s32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ int32_t ld_acquire(const int32_t* p) {
  int32_t v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// The CTA's shape: NW warps of 16 query slots each, K/V stages of KT tokens,
// STAGES stages in flight (a cp.async ring).
template <int NW_, int KT_, int STAGES_>
struct TileShape {
  static constexpr int NW = NW_, KT = KT_, STAGES = STAGES_;
  static_assert(STAGES >= 2, "the ring needs a stage to compute and one to fill");
};

// Shared memory: two query-row buffers (units alternate between them), then the
// ring of STAGES stages of KT keys and KT values; rows padded by 16 bytes. Two query
// buffers, not one per stage, keep deep rings small: the loader may start a unit
// only once the compute side is done with the queries of the unit two before it.
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

__device__ __forceinline__ int item_tiles(const AttentionItem& item, int tokens) {
  return (item.kv_end - item.kv_begin + tokens - 1) / tokens;
}

// Issues the cp.async copies of the keys and values of tokens [t0, t0 + TOKENS)
// (those at or past `end` zero-filled): token t is token t of `table`, or in a
// mixed stage (MIXED: a joined range's prefix ends inside it) token t of
// prefix_table below prefix_len and token t - prefix_len of `table` from there on.
// THREADS threads share the copies, `t` being this thread's index among them.
template <typename T, int D, int kLd, int TOKENS, int THREADS, bool MIXED>
__device__ __forceinline__ void issue_kv(const AttentionArgs& args, int kv_head,
                                         const int32_t* table, const int32_t* prefix_table, int t0,
                                         int end, int prefix_len, int t, T* dk, T* dv) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  const T* kc = static_cast<const T*>(args.k_cache);
  const T* vc = static_cast<const T*>(args.v_cache);
  const int64_t token_stride = int64_t(args.num_kv_heads) * D;
  auto local = [&](int tok) { return MIXED && tok >= prefix_len ? tok - prefix_len : tok; };
  // Addresses first, copies after: the block-table lookups of a stage are
  // independent loads, and issuing them back to back costs one latency, not one
  // per chunk (this runs once per stage, on the CTA's critical path).
  constexpr int kKvPer = (TOKENS * kChunks + THREADS - 1) / THREADS;
  int32_t block_of[kKvPer];  // the pool block of each chunk's token, -1 past the range
#pragma unroll
  for (int j = 0; j < kKvPer; ++j) {
    const int i = t + j * THREADS, tok = t0 + i / kChunks, at = local(tok);
    // Block sizes are almost always powers of two: a shift instead of a division.
    const int block = args.block_shift >= 0 ? at >> args.block_shift : at / args.block_size;
    const int32_t* tab = MIXED && tok < prefix_len ? prefix_table : table;
    block_of[j] = i < TOKENS * kChunks && tok < end ? tab[block] : -1;
  }
#pragma unroll
  for (int j = 0; j < kKvPer; ++j) {
    const int i = t + j * THREADS;
    if (i >= TOKENS * kChunks) continue;
    const int r = i / kChunks, c = i % kChunks, tok = local(t0 + r);
    const int at = r * kLd + c * 8;
    const bool valid = block_of[j] >= 0;
    const int within = args.block_shift >= 0 ? tok & (args.block_size - 1) : tok % args.block_size;
    const int64_t off = valid ? (int64_t(block_of[j]) * args.block_size + within) * token_stride +
                                    int64_t(kv_head) * D + c * 8
                              : 0;
    cp_async_16(dk + at, kc + off, valid ? 16 : 0);
    cp_async_16(dv + at, vc + off, valid ? 16 : 0);
  }
}

// Issues the cp.async copies of one item's stage: its query rows first when the
// item starts (rows past its slots zero-filled), then TOKENS keys and values from
// token kv_begin + tile * TOKENS on (tokens past kv_end zero-filled). THREADS
// threads share the copies, `t` being this thread's index among them; sq, dk, dv
// point at the item's first query, key and value row.
template <typename T, int D, int kLd, int QROWS, int TOKENS, int THREADS>
__device__ __forceinline__ void load_stage(const AttentionArgs& args, const AttentionItem& it,
                                           int tile, int t, T* sq, T* dk, T* dv) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  const T* q = static_cast<const T*>(args.q);
  // Addresses first, copies after (as in issue_kv), for the slot lookups.
  if (tile == 0) {
    constexpr int kQPer = (QROWS * kChunks + THREADS - 1) / THREADS;
    const T* src[kQPer];
#pragma unroll
    for (int j = 0; j < kQPer; ++j) {
      const int i = t + j * THREADS, r = i / kChunks, c = i % kChunks;
      src[j] = i < QROWS * kChunks && r < it.slot_count
                   ? q + int64_t(args.slots[it.slot_offset + r].row_head) * D + c * 8
                   : nullptr;
    }
#pragma unroll
    for (int j = 0; j < kQPer; ++j) {
      const int i = t + j * THREADS;
      if (i < QROWS * kChunks)
        cp_async_16(sq + (i / kChunks) * kLd + (i % kChunks) * 8, src[j] ? src[j] : q,
                    src[j] ? 16 : 0);
    }
  }
  const int32_t* table = args.block_tables + it.table_start;
  const int t0 = it.kv_begin + tile * TOKENS;
  if (t0 < it.prefix_len && t0 + TOKENS > it.prefix_len) {  // a joined range's prefix ends inside
    issue_kv<T, D, kLd, TOKENS, THREADS, true>(args, it.kv_head, table,
                                               args.block_tables + it.prefix_table, t0, it.kv_end,
                                               it.prefix_len, t, dk, dv);
  } else {  // tokens of one table: a joined range's own token t is the table's t - prefix_len
    const bool own = t0 >= it.prefix_len;
    const int shift = own ? it.prefix_len : 0;
    issue_kv<T, D, kLd, TOKENS, THREADS, false>(
        args, it.kv_head, own ? table : args.block_tables + it.prefix_table, nullptr, t0 - shift,
        it.kv_end - shift, 0, t, dk, dv);
  }
}

// A warp's online-softmax state: rows g and g + 8 of its 16 (g = lane / 4); lane
// tig = lane % 4 holds columns 2 tig, 2 tig + 1 of every 8 of the output.
template <int D>
struct RowState {
  float acc[D / 8][4];
  float m0, m1, l0, l1;  // running max (log2 units) and this lane's share of the sum
  __device__ __forceinline__ void reset() {
#pragma unroll
    for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    m0 = m1 = -INFINITY;
    l0 = l1 = 0.0f;
  }
};

// One warp's 16 query rows at sq against NT keys and values at tk, tv (rows
// padded to kLd), tokens t0 .. t0 + NT of the item: S = Q K^T, online softmax,
// acc += P V. Tokens at or past kv_end, or past a row's visible length, are masked;
// tiles below unmasked_end need no mask. The query fragments are read from shared
// memory for every tile rather than kept: their 32 registers (head_dim 128) would
// push the kernel past 255 and into spills.
template <typename T, int D, int NT, int kLd>
__device__ __forceinline__ void attend_tile(const T* sq, const T* tk, const T* tv, int t0,
                                            int kv_end, int unmasked_end, int vis0, int vis1,
                                            float scale_log2, RowState<D>& st, int lane) {
  const int tig = lane % 4, mi = lane / 8, rr = lane % 8;
  float s[NT / 8][4];
#pragma unroll
  for (int n = 0; n < NT / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t qf[4];
    ldmatrix_x4(qf, sq + (rr + (mi & 1) * 8) * kLd + kk * 16 + (mi >> 1) * 8);
#pragma unroll
    for (int j = 0; j < NT / 16; ++j) {
      uint32_t b[4];
      ldmatrix_x4(b, tk + (j * 16 + rr + (mi >> 1) * 8) * kLd + kk * 16 + (mi & 1) * 8);
      Mma<T>::run(s[2 * j], qf, b[0], b[1]);
      Mma<T>::run(s[2 * j + 1], qf, b[2], b[3]);
    }
  }

  float mx0 = -INFINITY, mx1 = -INFINITY;
  if (t0 + NT <= unmasked_end) {
#pragma unroll
    for (int n = 0; n < NT / 8; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        s[n][e] *= scale_log2;
        s[n][e + 2] *= scale_log2;
        mx0 = fmaxf(mx0, s[n][e]);
        mx1 = fmaxf(mx1, s[n][e + 2]);
      }
  } else {
#pragma unroll
    for (int n = 0; n < NT / 8; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int t = t0 + n * 8 + tig * 2 + e;
        const bool in_range = t < kv_end;
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
  const float new0 = fmaxf(st.m0, mx0), new1 = fmaxf(st.m1, mx1);
  // A row that has seen nothing yet keeps base 0 so exp2(-inf - base) is 0, never NaN.
  const float base0 = new0 == -INFINITY ? 0.0f : new0, base1 = new1 == -INFINITY ? 0.0f : new1;
  const float alpha0 = exp2f(st.m0 - base0), alpha1 = exp2f(st.m1 - base1);
  st.m0 = new0;
  st.m1 = new1;
  st.l0 *= alpha0;
  st.l1 *= alpha1;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    st.acc[n][0] *= alpha0;
    st.acc[n][1] *= alpha0;
    st.acc[n][2] *= alpha1;
    st.acc[n][3] *= alpha1;
  }
  uint32_t pf[NT / 16][4];
#pragma unroll
  for (int n = 0; n < NT / 8; ++n) {
    const float p0 = exp2f(s[n][0] - base0), p1 = exp2f(s[n][1] - base0);
    const float p2 = exp2f(s[n][2] - base1), p3 = exp2f(s[n][3] - base1);
    st.l0 += p0 + p1;
    st.l1 += p2 + p3;
    pf[n / 2][(n % 2) * 2] = Mma<T>::pack(p0, p1);
    pf[n / 2][(n % 2) * 2 + 1] = Mma<T>::pack(p2, p3);
  }
#pragma unroll
  for (int ks = 0; ks < NT / 16; ++ks)
#pragma unroll
    for (int j = 0; j < D / 16; ++j) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, tv + (ks * 16 + rr + (mi & 1) * 8) * kLd + j * 16 + (mi >> 1) * 8);
      Mma<T>::run(st.acc[2 * j], pf[ks], b[0], b[1]);
      Mma<T>::run(st.acc[2 * j + 1], pf[ks], b[2], b[3]);
    }
}

// The whole warp merges the partials of one output, [first, first + parts):
// o = sum_i exp(lse_i - max) o_i / sum_i exp(lse_i - max), lane l owning elements
// [l * kPer, +kPer). The loads of kBatch partials go out before the first is used
// (one latency per batch). The output's arrival count is zeroed for the next
// launch (every part has arrived). (Not inlined, so that its registers do not
// crowd the main loop's; hence the pointers by value, not the argument block.)
template <typename T, int D>
__device__ __noinline__ void merge_output(const float* partial_o, const float* partial_lse, T* out,
                                          int32_t* arrivals, int row_head, int first, int parts,
                                          int lane) {
  constexpr int kPer = D >= 32 ? D / 32 : 1;
  constexpr int kBatch = 16;
  const bool holds = lane * kPer < D;
  float o[kPer] = {};
  float mx = -INFINITY, total = 0.0f;
  for (int base = 0; base < parts; base += kBatch) {
    const int n = min(kBatch, parts - base);
    // Every load of the batch first (a partial past n repeats the first, weight 0).
    float lse[kBatch], v[kBatch][kPer];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int p = first + base + (j < n ? j : 0);
      lse[j] = j < n ? partial_lse[p] : -INFINITY;
      const float* src = partial_o + int64_t(p) * D + lane * kPer;
      if constexpr (kPer == 4) {
        const float4 x = *reinterpret_cast<const float4*>(src);
        v[j][0] = x.x, v[j][1] = x.y, v[j][2] = x.z, v[j][3] = x.w;
      } else {
#pragma unroll
        for (int k = 0; k < kPer; ++k) v[j][k] = holds ? src[k] : 0.0f;
      }
    }
    float batch_mx = mx;
#pragma unroll
    for (int j = 0; j < kBatch; ++j) batch_mx = fmaxf(batch_mx, lse[j]);
    if (batch_mx == -INFINITY) continue;  // nothing with mass yet
    const float rescale = mx == -INFINITY ? 0.0f : __expf(mx - batch_mx);
    total *= rescale;
#pragma unroll
    for (int k = 0; k < kPer; ++k) o[k] *= rescale;
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const float w = lse[j] == -INFINITY ? 0.0f : __expf(lse[j] - batch_mx);
      total += w;
#pragma unroll
      for (int k = 0; k < kPer; ++k) o[k] += w * v[j][k];
    }
    mx = batch_mx;
  }
  T* dst = out + int64_t(row_head) * D + lane * kPer;
  if (holds) {
#pragma unroll
    for (int k = 0; k < kPer; ++k) dst[k] = from_f32<T>(total > 0 ? o[k] / total : 0.0f);
  }
  if (lane == 0) arrivals[row_head] = 0;
}

// A row of a warp's item as its end needs it: the output, how many partials it
// has, and the row's partial index.
struct RowEnd {
  int row_head, parts, partial;
  bool live;
};

// The end of an item, for one warp: each of its live rows either is its output's
// only part (written directly) or becomes a partial (o, lse) whose arrival is
// counted for the merge at the end of the launch: after a __syncwarp, the lane
// holding a row's first columns counts it with a release add, which publishes
// the whole warp's writes; the count's result is not waited for.
template <typename T, int D>
__device__ __forceinline__ void finish_item(const AttentionArgs& args, const RowState<D>& st,
                                            const RowEnd& s0, const RowEnd& s1, int lane) {
  const int tig = lane % 4;
  float sum0 = st.l0, sum1 = st.l1;
  sum0 += __shfl_xor_sync(0xffffffffu, sum0, 1);
  sum0 += __shfl_xor_sync(0xffffffffu, sum0, 2);
  sum1 += __shfl_xor_sync(0xffffffffu, sum1, 1);
  sum1 += __shfl_xor_sync(0xffffffffu, sum1, 2);
  const float inv0 = sum0 > 0 ? 1.0f / sum0 : 0.0f, inv1 = sum1 > 0 ? 1.0f / sum1 : 0.0f;
  const float lse0 = sum0 > 0 ? (st.m0 + log2f(sum0)) * kLn2 : -INFINITY;
  const float lse1 = sum1 > 0 ? (st.m1 + log2f(sum1)) * kLn2 : -INFINITY;
  T* const out = static_cast<T*>(args.out);
  auto write_row = [&](const RowEnd& s, int e, float inv, float lse) {
    if (!s.live) return;
    if (s.parts == 1) {
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<uint32_t*>(out + int64_t(s.row_head) * D + n * 8 + tig * 2) =
            Mma<T>::pack(st.acc[n][e] * inv, st.acc[n][e + 1] * inv);
      return;
    }
    float* o = args.partial_o + int64_t(s.partial) * D;
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<float2*>(o + n * 8 + tig * 2) =
          make_float2(st.acc[n][e] * inv, st.acc[n][e + 1] * inv);
    if (tig == 0) args.partial_lse[s.partial] = lse;
  };
  write_row(s0, 0, inv0, lse0);
  write_row(s1, 2, inv1, lse1);
  const bool counts0 = s0.live && s0.parts > 1, counts1 = s1.live && s1.parts > 1;
  if (!__any_sync(0xffffffffu, counts0 || counts1)) return;
  __syncwarp();
  if (tig == 0) {
    if (counts0) red_release_add(args.arrivals + s0.row_head, 1);
    if (counts1) red_release_add(args.arrivals + s1.row_head, 1);
  }
}

// A persistent CTA streams the stages of its units through one cp.async ring,
// crossing unit boundaries: the first stages of the next unit are in flight while
// the current one finishes, so short units (decode rows' own tokens, splits of a
// prefix) cost no pipeline start each. Units are claimed from a cursor, the next
// one a few stages before the loader needs it; the grid need not match the unit
// count, so one captured launch serves every step.
//
// Outputs with several partials are merged after the CTA's last unit: its warps
// take such outputs from a second cursor, wait until every partial has arrived,
// and merge them. The wait cannot deadlock: a CTA merges only once the unit cursor
// is exhausted, so every unit has been claimed by a running CTA, and units never
// wait. (For that, even a CTA's first unit is claimed, not implied by its index:
// a CTA not yet resident would otherwise hold a unit nobody works on.)
//
// Every decision below depends only on values all threads share (a unit's stage
// count and kind), so the CTA walks the loop in lockstep; within a packed unit each
// warp loads and computes its own item, and a warp whose item is shorter than the
// unit's longest sits out the remaining stages.
template <typename T, int D, typename S>
__global__ void __launch_bounds__(S::NW * 32) paged_attention_kernel(AttentionArgs args) {
  constexpr int NW = S::NW, KT = S::KT, STAGES = S::STAGES;
  constexpr int PT = kPackTileTokens;  // a packed item's tokens per stage
  static_assert(NW == kPackItems && KT == kWideTileTokens && NW * 16 == kWideSlots,
                "the unit layout (attention_work.h) and the CTA shape must agree");
  using L = StageLayout<D, S>;
  constexpr int kLd = L::kLd;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* const smem = reinterpret_cast<T*>(smem_raw);
  // Unit of the stage's tiles (-1: the stream is over, -2: nothing this time), the
  // stage's index within the unit, and the unit's kind.
  __shared__ int s_stage_unit[STAGES];
  __shared__ int s_stage_tile[STAGES];
  __shared__ int s_stage_packed[STAGES];
  __shared__ int s_claim;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4;
  const int total = args.counts[0];

  // The loader: the unit whose stages it issues (this warp's item of it, its stage
  // count and kind), and the next one once claimed.
  if (tid == 0) s_claim = atomicAdd(args.cursor, 1);
  __syncthreads();
  int ld_index = s_claim;
  AttentionItem ld{};
  int ld_tiles = 0, ld_packed = 0, ld_tile = 0;
  if (ld_index < total) {
    ld = args.units[ld_index].items[warp];
    ld_tiles = args.units[ld_index].stages;
    ld_packed = args.units[ld_index].packed;
  }
  int next_index = INT_MAX, next_tiles = 0, next_packed = 0;
  AttentionItem next{};
  // A claim takes three issues (the atomic, thread 0's store of its result, every
  // thread's read after a barrier), so it starts kClaimAhead stages before the
  // current unit's last: early enough that short units stream without a gap, late
  // enough that the cursor still balances the CTAs (claims made at the kernel's
  // start would deal all units out round-robin, long ones included). (Four stages
  // ahead, with the next unit's slots and first block-table line prefetched into
  // L1 in the extra issue, measured 1% slower.)
  constexpr int kClaimAhead = 3;
  enum : int { kIdle, kAtomic, kStored, kFetched };
  int claim = kIdle, claimed = 0;
  // Units started by the loader and by the compute side (query buffer = seq % 2).
  int ld_seq = 0, cu_started = 0;

  // Runs right after a barrier: advances the claim, and issues the loader's next
  // stage into `stage` (or marks the stage empty).
  auto issue = [&](int stage) {
    if (claim == kStored) {
      next_index = s_claim;
      if (next_index < total) {
        next = args.units[next_index].items[warp];
        next_tiles = args.units[next_index].stages;
        next_packed = args.units[next_index].packed;
      }
      claim = kFetched;
    } else if (claim == kAtomic) {
      if (tid == 0) s_claim = claimed;
      claim = kStored;
    } else if (claim == kIdle && ld_index < total && ld_tiles - ld_tile <= kClaimAhead) {
      if (tid == 0) claimed = atomicAdd(args.cursor, 1);
      claim = kAtomic;
    }
    bool bubble = false;
    if (ld_index < total && ld_tile == ld_tiles) {
      if (claim == kFetched) {
        ld_index = next_index;
        ld = next;
        ld_tiles = ld_index < total ? next_tiles : 0;
        ld_packed = next_packed;
        ld_tile = 0;
        ++ld_seq;
        claim = kIdle;
      } else {
        bubble = true;  // the claim is still on its way (units shorter than kClaimAhead stages)
      }
    }
    // The unit's query buffer still holds the queries of the unit two before, which
    // the compute side reads until that unit's last stage: wait until the unit
    // before this one has started (only units shorter than the ring wait).
    if (ld_index < total && ld_tile == 0 && cu_started < ld_seq) bubble = true;
    const bool live = ld_index < total && !bubble;
    if (live) {
      T* const sq = smem + (ld_seq % 2) * L::kQ;
      T* const dk = smem + L::kRing + stage * L::kStage;
      T* const dv = dk + KT * kLd;
      if (!ld_packed) {
        load_stage<T, D, kLd, kWideSlots, KT, NW * 32>(args, ld, ld_tile, tid, sq, dk, dv);
      } else if (ld.slot_count > 0 && ld_tile < item_tiles(ld, PT)) {
        const int row = warp * 16;
        load_stage<T, D, kLd, kNarrowSlots, PT, 32>(args, ld, ld_tile, lane, sq + row * kLd,
                                                    dk + row * kLd, dv + row * kLd);
      }
    }
    if (tid == 0) {
      s_stage_unit[stage] = live ? ld_index : bubble ? -2 : -1;
      s_stage_tile[stage] = ld_tile;
      s_stage_packed[stage] = ld_packed;
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

  // The compute side: this warp's item of the unit being reduced, its rows' slots
  // and running state.
  AttentionItem cu{};
  int cu_tiles = 0, cu_packed = 0, r0 = 0, unmasked_end = 0;
  int vis0 = 0, vis1 = 0, row_head0 = -1, row_head1 = -1, parts0 = 0, parts1 = 0, base0 = 0,
      base1 = 0;
  bool warp_live = false;
  const T* sq = smem;  // the unit's query rows of this warp
  RowState<D> st;
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
    const int unit = s_stage_unit[stage], tile = s_stage_tile[stage];
    if (unit == -1) break;   // the stream is over (every later element is empty too)
    if (unit < 0) continue;  // a bubble
    const T* const tk = smem + L::kRing + stage * L::kStage;
    const T* const tv = tk + KT * kLd;

    if (tile == 0) {  // a new unit: this warp's item, its rows' slots and queries, fresh state
      cu_packed = s_stage_packed[stage];
      cu = args.units[unit].items[warp];
      cu_tiles = item_tiles(cu, cu_packed ? PT : KT);
      r0 = (cu_packed ? 0 : warp * 16) + g;  // the item's slot of this lane's first row
      const int r1 = r0 + 8;
      const QuerySlot slot0 =
          r0 < cu.slot_count ? args.slots[cu.slot_offset + r0] : QuerySlot{-1, 0};
      const QuerySlot slot1 =
          r1 < cu.slot_count ? args.slots[cu.slot_offset + r1] : QuerySlot{-1, 0};
      vis0 = slot0.visible;
      vis1 = slot1.visible;
      row_head0 = slot0.row_head;
      row_head1 = slot1.row_head;
      parts0 = slot0.parts;
      parts1 = slot1.parts;
      base0 = slot0.partial_base;
      base1 = slot1.partial_base;
      // Tiles that every live row of the warp sees whole need no mask (rows past the
      // item's slots are never written, so they do not limit it).
      const int live_min = __reduce_min_sync(0xffffffffu, min(r0 < cu.slot_count ? vis0 : INT_MAX,
                                                              r1 < cu.slot_count ? vis1 : INT_MAX));
      unmasked_end = min(cu.kv_end, live_min);
      // A warp none of whose rows is one of the item's slots (a 32-query prefix group
      // in a wide unit, a pack of fewer than NW items) only helps load.
      warp_live = r0 - g < cu.slot_count;
      st.reset();
      sq = smem + (cu_started % 2) * L::kQ + warp * 16 * kLd;
      ++cu_started;
    }
    if (!warp_live || tile >= cu_tiles) continue;
    if (cu_packed)
      attend_tile<T, D, PT, kLd>(sq, tk + warp * PT * kLd, tv + warp * PT * kLd,
                                 cu.kv_begin + tile * PT, cu.kv_end, unmasked_end, vis0, vis1,
                                 scale_log2, st, lane);
    else
      attend_tile<T, D, KT, kLd>(sq, tk, tv, cu.kv_begin + tile * KT, cu.kv_end, unmasked_end, vis0,
                                 vis1, scale_log2, st, lane);
    if (tile + 1 < cu_tiles) continue;
    finish_item<T, D>(args, st, RowEnd{row_head0, parts0, base0 + cu.split, r0 < cu.slot_count},
                      RowEnd{row_head1, parts1, base1 + cu.split, r0 + 8 < cu.slot_count}, lane);
  }

  // The merges: a warp at a time takes an output, waits for its partials and
  // merges them (merge_output zeroes its arrival count). The next claim is made
  // once the wait is over, before the merge, so that its latency passes during
  // the merge while a waiting warp holds one output only (claimed before the wait,
  // a second output would wait behind the first: 1.3% slower on average, up to
  // 13% at small batches, measured).
  const int outputs = args.counts[1];
  int claimed_merge = 0;
  if (lane == 0) claimed_merge = atomicAdd(args.cursor + 2, 1);
  for (;;) {
    const int index = __shfl_sync(0xffffffffu, claimed_merge, 0);
    if (index >= outputs) break;
    const MergeOutput m = args.merges[index];
    // Lane 0 acquires the count; the __syncwarp passes what it saw to the others.
    if (lane == 0) {
      while (ld_acquire(args.arrivals + m.row_head) < m.parts) __nanosleep(64);
      claimed_merge = atomicAdd(args.cursor + 2, 1);
    }
    __syncwarp();
    merge_output<T, D>(args.partial_o, args.partial_lse, static_cast<T*>(args.out), args.arrivals,
                       m.row_head, m.first, m.parts, lane);
  }
  // The last CTA out zeroes the cursors and the count for the next launch (every
  // other CTA has made its last claims before it counted itself out).
  __syncthreads();
  if (tid == 0) {
    __threadfence();
    if (atomicAdd(args.cursor + 1, 1) == int(gridDim.x) - 1) {
      args.cursor[0] = 0;
      args.cursor[1] = 0;
      args.cursor[2] = 0;
    }
  }
}

// Tiles in flight; a build may override it (-DRELAYLLM_STAGES=3) to sweep it on a GPU.
#ifndef RELAYLLM_STAGES
#define RELAYLLM_STAGES 2
#endif
#ifndef RELAYLLM_MAX_CTAS_PER_SM
#define RELAYLLM_MAX_CTAS_PER_SM 16
#endif

// Four warps: a wide unit's 64 query slots, or four packed items.
using CtaTile = TileShape<kPackItems, kWideTileTokens, RELAYLLM_STAGES>;

template <typename T, int D>
struct Kernel {
  static constexpr auto fn = paged_attention_kernel<T, D, CtaTile>;
  static constexpr size_t smem = attention_smem_bytes<D, CtaTile>();
};

template <typename T, int D>
AttentionOccupancy prepare() {
  using K = Kernel<T, D>;
  RELAYLLM_CUDA_CHECK(
      cudaFuncSetAttribute(K::fn, cudaFuncAttributeMaxDynamicSharedMemorySize, int(K::smem)));
  int n = 0;
  RELAYLLM_CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, K::fn, CtaTile::NW * 32, K::smem));
  return AttentionOccupancy{std::min(n, RELAYLLM_MAX_CTAS_PER_SM)};
}

template <typename T, int D>
void launch(const AttentionArgs& args, cudaStream_t stream) {
  if (args.grid == 0) return;
  using K = Kernel<T, D>;
  K::fn<<<args.grid, CtaTile::NW * 32, K::smem, stream>>>(args);
  RELAYLLM_CUDA_LAUNCH_CHECK("paged_attention");
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

struct Launch {
  template <typename T, int D>
  static void run(const AttentionArgs& args, cudaStream_t stream) {
    launch<T, D>(args, stream);
  }
};

struct Prepare {
  template <typename T, int D>
  static AttentionOccupancy run() {
    return prepare<T, D>();
  }
};

}  // namespace

void launch_attention(const AttentionArgs& args, cudaStream_t stream) {
  dispatch<Launch>(args.dtype, args.head_dim, args, stream);
}

AttentionOccupancy prepare_attention(DType dtype, int32_t head_dim) {
  return dispatch<Prepare>(dtype, head_dim);
}

}  // namespace relayllm::cuda
