#include "relayllm/backend/cuda/cuda_backend.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <map>
#include <tuple>

#include "relayllm/backend/cuda/attention_work.h"
#include "relayllm/backend/cuda/cublaslt_loader.h"
#include "relayllm/backend/cuda/cuda_attention.cuh"
#include "relayllm/backend/cuda/cuda_check.h"
#include "relayllm/backend/cuda/cuda_fp8.cuh"
#include "relayllm/backend/cuda/cuda_ops.cuh"
#include "relayllm/backend/cuda/cuda_skinny_gemm.cuh"
#include "relayllm/backend/cuda/step_staging.h"
#include "relayllm/backend/fp8_weight.h"
#include "relayllm/common/error.h"
#include "relayllm/common/half.h"

namespace relayllm {
namespace {

#define RELAYLLM_CUBLAS_CHECK(expr)                                                     \
  do {                                                                                  \
    cublasStatus_t relayllm_st_ = (expr);                                               \
    if (relayllm_st_ != CUBLAS_STATUS_SUCCESS)                                          \
      ::relayllm::fail("cublasLt: {} failed with status {}", #expr, int(relayllm_st_)); \
  } while (0)

// The stream and the stream-ordered pool every allocation comes from. Tensors hold
// it through their deleters, so memory is freed in stream order even when a tensor
// outlives the backend.
struct Context {
  int device = 0;
  cudaStream_t stream = nullptr;
  ~Context() {
    if (stream) {
      cudaStreamSynchronize(stream);
      cudaStreamDestroy(stream);
    }
  }
};

std::shared_ptr<void> device_alloc(const std::shared_ptr<Context>& ctx, size_t bytes) {
  void* p = nullptr;
  RELAYLLM_CUDA_CHECK(cudaMallocAsync(&p, std::max<size_t>(bytes, 16), ctx->stream));
  return std::shared_ptr<void>(p, [ctx](void* q) { cudaFreeAsync(q, ctx->stream); });
}

// Memory for data uploaded once (weights, tables) comes from cudaMalloc, outside the
// stream-ordered pool that serves each step's activations and keeps their freed blocks: a weight
// freed after loading (the q/k/v and gate/up parts once stacked) then goes back to the device at
// once, where in the pool it stranded 2 MiB blocks shared with live weights (168 MiB for two
// Llama-2-7B layers on an H100). cudaFree waits for the device's pending work.
std::shared_ptr<void> persistent_alloc(size_t bytes) {
  void* p = nullptr;
  RELAYLLM_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 16)));
  return std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
}

// The regions of the step staging (see step_staging.h).
enum Region : int {
  kTokenIds,
  kPositions,
  kSlotMapping,
  kLogitRows,
  kBlockTables,
  kCounts,
  kSlots,
  kUnits,
  kMerges,
  kNumRegions
};

template <typename T>
void put(cuda::StepStaging& staging, Region region, const std::vector<T>& values) {
  if (!values.empty()) std::memcpy(staging.host(region), values.data(), values.size() * sizeof(T));
}

cudaDataType_t cuda_type(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    default:
      return CUDA_R_32F;
  }
}

// Events on the backend's stream; reused across reads, so a profiled step allocates
// none once the first has run. The context is held so the stream outlives the timer.
class CudaOpTimer final : public OpTimer {
 public:
  explicit CudaOpTimer(std::shared_ptr<Context> ctx) : ctx_(std::move(ctx)) {}
  ~CudaOpTimer() override {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
  }
  void mark() override {
    if (used_ == events_.size()) {
      cudaEvent_t e = nullptr;
      RELAYLLM_CUDA_CHECK(cudaEventCreate(&e));
      events_.push_back(e);
    }
    RELAYLLM_CUDA_CHECK(cudaEventRecord(events_[used_++], ctx_->stream));
  }
  std::vector<double> read_ms() override {
    std::vector<double> ms;
    if (used_ > 0) RELAYLLM_CUDA_CHECK(cudaEventSynchronize(events_[used_ - 1]));
    for (size_t i = 1; i < used_; ++i) {
      float t = 0;
      RELAYLLM_CUDA_CHECK(cudaEventElapsedTime(&t, events_[i - 1], events_[i]));
      ms.push_back(double(t));
    }
    used_ = 0;
    return ms;
  }

 private:
  std::shared_ptr<Context> ctx_;
  std::vector<cudaEvent_t> events_;
  size_t used_ = 0;
};

// An integer from the environment (A/B switches for benchmarks), else `fallback`.
int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long long parsed = std::strtoll(v, &end, 10);
  RELAYLLM_CHECK(end && *end == '\0' && parsed >= 0, "{}={}: expected a non-negative integer", name,
                 v);
  return parsed;
}

struct GemmPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

}  // namespace

struct CudaBackend::Impl {
  std::shared_ptr<Context> ctx;
  cublasLtHandle_t lt = nullptr;
  std::shared_ptr<void> workspace;
  size_t workspace_bytes = size_t(32) << 20;
  std::map<std::tuple<int64_t, int64_t, int64_t, int, int>, GemmPlan> gemm_plans;
  int num_sms = 0;
  bool fp8 = false;                 // FP8 tensor cores (sm_89+)
  bool fp8_outer = true;            // try cuBLASLt's outer-vector scales first
  int32_t fp8_gemv_max_tokens = 0;  // FP8 ops on this many rows or fewer: the gemv kernel
  bool fp8_fused_gemv = true;       // ... with the activation quantization folded in
  const char* fp8_path = "";        // how the latest FP8 linear ran
  bool split_kv = true;
  int32_t items_per_sm = 4, min_split = 128;
  int32_t skinny_rows = 8;
  bool fuse_weights = true;
  bool decode_row_kernels = true;
  // A pinned bounce buffer for downloads: a copy into pageable memory runs at a fraction
  // of the bus's rate (the driver stages it through its own buffers), and the logits of
  // a batch are megabytes every step. Grown as needed, never inside a capture.
  bool pinned_download = true;
  void* pinned = nullptr;
  size_t pinned_bytes = 0;
  bool programmatic = false;  // only where the device has it (sm_90+)
  bool device_has_pdl = false;

  // The current step: rows of its tensors (padding included) and its staged arrays.
  int32_t rows = 0;
  std::unique_ptr<cuda::StepStaging> staging;
  // The attention work list staged with the step, for this attention layout.
  AttentionShape work_shape;
  int32_t num_units = 0, num_merged = 0;
  std::shared_ptr<void> part_o, part_lse, cursor, arrivals;
  int64_t partial_capacity = 0, arrival_capacity = 0;
  DType occupancy_dtype = DType::kF32;
  int32_t occupancy_dim = -1;
  cuda::AttentionOccupancy occupancy;

  // Captured graphs by (caller's key, whether the step runs attention units): the
  // kernel is left out of a graph that has none rather than launched empty.
  bool capturing = false;
  std::map<std::pair<int64_t, int>, cudaGraphExec_t> graphs;

  int attention_kinds() const { return num_units > 0 ? 1 : 0; }
  cuda::AttentionWorkOptions work_options(const AttentionShape& shape, int32_t rows) const {
    cuda::AttentionWorkOptions options;
    options.num_heads = shape.num_heads;
    options.num_kv_heads = shape.num_kv_heads;
    options.num_sms = num_sms;
    options.split = split_kv;
    options.items_per_sm = items_per_sm;
    options.min_split = min_split;
    options.num_rows = rows;
    return options;
  }
  void drop_graphs() {
    for (auto& [key, exec] : graphs) cudaGraphExecDestroy(exec);
    graphs.clear();
  }
  // The three parts of begin_step (defined next to it); the last two return whether
  // device addresses moved.
  cuda::AttentionWork plan_attention(const BatchPlan& plan, const AttentionShape& shape,
                                     DType dtype, int32_t padded_rows);
  bool stage(const BatchPlan& plan, const cuda::AttentionWork& work, int32_t padded_rows);
  bool grow_buffers(const cuda::AttentionWork& work, const AttentionShape& shape,
                    int32_t padded_rows);

  ~Impl() {
    if (ctx) cudaStreamSynchronize(ctx->stream);
    drop_graphs();
    if (pinned) cudaFreeHost(pinned);
    const cuda::CublasLtApi* api = lt ? &cuda::cublaslt_api() : nullptr;
    for (auto& [key, plan] : gemm_plans) {
      if (!plan.desc) continue;  // an FP8 shape with no algorithm
      api->layout_destroy(plan.a);
      api->layout_destroy(plan.b);
      api->layout_destroy(plan.c);
      api->desc_destroy(plan.desc);
    }
    if (lt) api->destroy(lt);
  }

  GemmPlan& gemm_plan(int64_t t, int64_t n, int64_t k, DType dtype, DType out_dtype) {
    auto key = std::make_tuple(t, n, k, int(dtype), int(out_dtype));
    auto it = gemm_plans.find(key);
    if (it != gemm_plans.end()) return it->second;
    const cuda::CublasLtApi& api = cuda::cublaslt_api();
    GemmPlan plan;
    // Column-major view: out^T [N, T] = W [N, K] (stored as col-major K x N, transposed) * x^T [K,
    // T].
    RELAYLLM_CUBLAS_CHECK(api.desc_create(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    RELAYLLM_CUBLAS_CHECK(
        api.desc_set(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
    RELAYLLM_CUBLAS_CHECK(
        api.desc_set(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
    cudaDataType_t type = cuda_type(dtype);
    RELAYLLM_CUBLAS_CHECK(api.layout_create(&plan.a, type, uint64_t(k), uint64_t(n), k));
    RELAYLLM_CUBLAS_CHECK(api.layout_create(&plan.b, type, uint64_t(k), uint64_t(t), k));
    RELAYLLM_CUBLAS_CHECK(
        api.layout_create(&plan.c, cuda_type(out_dtype), uint64_t(n), uint64_t(t), n));
    cublasLtMatmulPreference_t pref = nullptr;
    RELAYLLM_CUBLAS_CHECK(api.pref_create(&pref));
    RELAYLLM_CUBLAS_CHECK(api.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                       &workspace_bytes, sizeof(workspace_bytes)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    cublasStatus_t st =
        api.heuristic(lt, plan.desc, plan.a, plan.b, plan.c, plan.c, pref, 1, &result, &found);
    api.pref_destroy(pref);
    RELAYLLM_CHECK(st == CUBLAS_STATUS_SUCCESS && found > 0,
                   "cublasLt: no algorithm for linear [{} x {}] * [{} x {}]^T (status {})", t, k, n,
                   k, int(st));
    plan.algo = result.algo;
    return gemm_plans.emplace(key, plan).first->second;
  }

  // An FP8 GEMM (e4m3 weight and activations, fp32 accumulation) writing `out_dtype`: with
  // outer-vector scales (the scale pointers are set per call), or unit scales. Returns null
  // when cuBLASLt has no algorithm for it (outer-vector scales on an older cuBLASLt).
  GemmPlan* fp8_gemm_plan(int64_t t, int64_t n, int64_t k, DType out_dtype, bool outer) {
    // The dtype slot of the key tells FP8 plans from 16-bit ones (DType values are small).
    auto key = std::make_tuple(t, n, k, outer ? 101 : 100, int(out_dtype));
    auto it = gemm_plans.find(key);
    if (it != gemm_plans.end()) return it->second.desc ? &it->second : nullptr;
    const cuda::CublasLtApi& api = cuda::cublaslt_api();
    GemmPlan plan;
    RELAYLLM_CUBLAS_CHECK(api.desc_create(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    // FP8 GEMMs on Hopper take A transposed and B not ("TN"), which is this layout.
    cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    RELAYLLM_CUBLAS_CHECK(
        api.desc_set(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
    RELAYLLM_CUBLAS_CHECK(
        api.desc_set(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
    if (outer) {
      const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
      RELAYLLM_CUBLAS_CHECK(
          api.desc_set(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof(mode)));
      RELAYLLM_CUBLAS_CHECK(
          api.desc_set(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof(mode)));
      // Placeholders for the heuristic; linear_fp8 sets the real vectors before each call.
      const void* placeholder = workspace.get();
      RELAYLLM_CUBLAS_CHECK(api.desc_set(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                         &placeholder, sizeof(placeholder)));
      RELAYLLM_CUBLAS_CHECK(api.desc_set(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                         &placeholder, sizeof(placeholder)));
    }
    RELAYLLM_CUBLAS_CHECK(api.layout_create(&plan.a, CUDA_R_8F_E4M3, uint64_t(k), uint64_t(n), k));
    RELAYLLM_CUBLAS_CHECK(api.layout_create(&plan.b, CUDA_R_8F_E4M3, uint64_t(k), uint64_t(t), k));
    RELAYLLM_CUBLAS_CHECK(
        api.layout_create(&plan.c, cuda_type(out_dtype), uint64_t(n), uint64_t(t), n));
    cublasLtMatmulPreference_t pref = nullptr;
    RELAYLLM_CUBLAS_CHECK(api.pref_create(&pref));
    RELAYLLM_CUBLAS_CHECK(api.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                       &workspace_bytes, sizeof(workspace_bytes)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st =
        api.heuristic(lt, plan.desc, plan.a, plan.b, plan.c, plan.c, pref, 1, &result, &found);
    api.pref_destroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
      api.layout_destroy(plan.a);
      api.layout_destroy(plan.b);
      api.layout_destroy(plan.c);
      api.desc_destroy(plan.desc);
      RELAYLLM_CHECK(outer,
                     "cublasLt: no FP8 algorithm for linear [{} x {}] * [{} x {}]^T "
                     "(status {})",
                     t, k, n, k, int(st));
      gemm_plans.emplace(key, GemmPlan{});  // remembered: no algorithm
      return nullptr;
    }
    plan.algo = result.algo;
    return &gemm_plans.emplace(key, plan).first->second;
  }
};

bool cuda_device_available() { return cuda_device_count() > 0; }

int cuda_device_count() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

CudaBackend::CudaBackend(const CudaBackendOptions& options)
    : impl_(std::make_unique<Impl>()), dtype_(options.dtype) {
  RELAYLLM_CHECK(options.dtype == DType::kBF16 || options.dtype == DType::kF16,
                 "cuda backend: --dtype float32 is not supported (bfloat16 or float16)");
  int count = 0;
  RELAYLLM_CHECK(cudaGetDeviceCount(&count) == cudaSuccess && count > options.device,
                 "cuda backend: device {} not found ({} visible)", options.device, count);
  RELAYLLM_CUDA_CHECK(cudaSetDevice(options.device));
  cudaDeviceProp prop{};
  RELAYLLM_CUDA_CHECK(cudaGetDeviceProperties(&prop, options.device));
  RELAYLLM_CHECK(prop.major >= 8, "cuda backend: {} (sm_{}{}) is older than sm_80", prop.name,
                 prop.major, prop.minor);
  impl_->num_sms = prop.multiProcessorCount;
  impl_->fp8 = prop.major * 10 + prop.minor >= 89;
  impl_->fp8_outer = options.fp8_outer_vector_scales;
  RELAYLLM_CHECK(
      options.fp8_gemv_max_tokens >= 0 && options.fp8_gemv_max_tokens <= cuda::kFp8GemvMaxTokens,
      "cuda backend: fp8_gemv_max_tokens {} is outside [0, {}]", options.fp8_gemv_max_tokens,
      cuda::kFp8GemvMaxTokens);
  impl_->fp8_gemv_max_tokens = options.fp8_gemv_max_tokens;
  impl_->fp8_fused_gemv = options.fp8_fused_gemv;
  impl_->split_kv = options.split_kv;
  impl_->items_per_sm = options.attention_items_per_sm;
  impl_->min_split = options.attention_min_split;
  impl_->skinny_rows = int32_t(
      std::min<int64_t>(env_int("RELAYLLM_CUDA_SKINNY_GEMM_ROWS", options.skinny_gemm_max_rows),
                        cuda::kSkinnyGemmMaxRows));
  impl_->fuse_weights = env_int("RELAYLLM_CUDA_FUSE_WEIGHTS", options.fuse_weights ? 1 : 0) != 0;
  impl_->device_has_pdl = prop.major >= 9;
  impl_->programmatic = impl_->device_has_pdl &&
                        env_int("RELAYLLM_CUDA_PDL", options.programmatic_launch ? 1 : 0) != 0;
  impl_->ctx = std::make_shared<Context>();
  impl_->ctx->device = options.device;
  RELAYLLM_CUDA_CHECK(cudaStreamCreateWithFlags(&impl_->ctx->stream, cudaStreamNonBlocking));
  // Keep freed blocks in the pool: every step allocates and frees the same activations.
  cudaMemPool_t pool;
  RELAYLLM_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, options.device));
  uint64_t threshold = UINT64_MAX;
  RELAYLLM_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  RELAYLLM_CUBLAS_CHECK(cuda::cublaslt_api().create(&impl_->lt));
  impl_->workspace = device_alloc(impl_->ctx, impl_->workspace_bytes);
  impl_->staging = std::make_unique<cuda::StepStaging>(kNumRegions);
  // [next unit, CTAs done, next merge]: zero here; the attention kernel's last CTA
  // zeroes them again for the next launch.
  impl_->cursor = device_alloc(impl_->ctx, 3 * sizeof(int32_t));
  RELAYLLM_CUDA_CHECK(
      cudaMemsetAsync(impl_->cursor.get(), 0, 3 * sizeof(int32_t), impl_->ctx->stream));
}

CudaBackend::~CudaBackend() {
  if (impl_ && impl_->ctx) cudaStreamSynchronize(impl_->ctx->stream);
}

void* CudaBackend::stream() const { return impl_->ctx->stream; }

std::unique_ptr<OpTimer> CudaBackend::make_op_timer() {
  return std::make_unique<CudaOpTimer>(impl_->ctx);
}

cuda::AttentionWorkSummary CudaBackend::attention_work_summary(const BatchPlan& plan,
                                                               const AttentionShape& shape) {
  Impl& m = *impl_;
  const cuda::AttentionOccupancy occupancy = cuda::prepare_attention(dtype_, shape.head_dim);
  const cuda::AttentionWork work =
      cuda::build_attention_work(plan, m.work_options(shape, plan.num_rows()));
  return cuda::summarize(work, int64_t(occupancy.ctas_per_sm) * m.num_sms, shape.head_dim);
}

double CudaBackend::measure_copy_bandwidth(size_t bytes, int copies) {
  RELAYLLM_CHECK(copies > 0, "copy bandwidth: {} copies", copies);
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
    cudaFree(a);
    cudaGetLastError();  // clears the failed allocation's error
    return 0;
  }
  cudaStream_t stream = impl_->ctx->stream;
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  RELAYLLM_CUDA_CHECK(cudaEventCreate(&e0));
  RELAYLLM_CUDA_CHECK(cudaEventCreate(&e1));
  RELAYLLM_CUDA_CHECK(cudaMemsetAsync(a, 0x3c, bytes, stream));
  constexpr int kWarmUp = 3;
  std::vector<float> ms;
  for (int i = 0; i < kWarmUp + copies; ++i) {
    RELAYLLM_CUDA_CHECK(cudaEventRecord(e0, stream));
    RELAYLLM_CUDA_CHECK(
        cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice, stream));
    RELAYLLM_CUDA_CHECK(cudaEventRecord(e1, stream));
    RELAYLLM_CUDA_CHECK(cudaEventSynchronize(e1));
    float t = 0;
    RELAYLLM_CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
    if (i >= kWarmUp) ms.push_back(t);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(a);
  cudaFree(b);
  std::sort(ms.begin(), ms.end());
  return 2.0 * double(bytes) / (double(ms[ms.size() / 2]) * 1e-3);
}

void CudaBackend::set_skinny_gemm_rows(int32_t rows) {
  RELAYLLM_CHECK(!impl_->capturing, "cuda backend: kernel switch while capturing a graph");
  synchronize();
  impl_->drop_graphs();
  impl_->skinny_rows = int32_t(std::clamp<int64_t>(rows, 0, cuda::kSkinnyGemmMaxRows));
}

void CudaBackend::set_decode_row_kernels(bool fused) {
  RELAYLLM_CHECK(!impl_->capturing, "cuda backend: kernel switch while capturing a graph");
  synchronize();
  impl_->drop_graphs();
  impl_->decode_row_kernels = fused;
}

void CudaBackend::set_programmatic_launch(bool on) {
  RELAYLLM_CHECK(!impl_->capturing, "cuda backend: kernel switch while capturing a graph");
  synchronize();
  impl_->drop_graphs();
  impl_->programmatic = on && impl_->device_has_pdl;
}

void CudaBackend::set_pinned_download(bool on) { impl_->pinned_download = on; }

int32_t CudaBackend::skinny_gemm_rows() const { return impl_->skinny_rows; }

void CudaBackend::synchronize() { RELAYLLM_CUDA_CHECK(cudaStreamSynchronize(impl_->ctx->stream)); }

size_t CudaBackend::free_memory() const {
  // The pool keeps freed blocks (release threshold: unlimited), so without a trim, memory
  // freed while loading (the q/k/v and gate/up parts after stacking) would count as taken
  // and shrink the KV cache. Waits for the stream first: frees are stream-ordered.
  RELAYLLM_CUDA_CHECK(cudaStreamSynchronize(impl_->ctx->stream));
  cudaMemPool_t pool;
  RELAYLLM_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, impl_->ctx->device));
  RELAYLLM_CUDA_CHECK(cudaMemPoolTrimTo(pool, 0));
  size_t free = 0, total = 0;
  RELAYLLM_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  return free;
}

size_t CudaBackend::total_memory() const {
  size_t free = 0, total = 0;
  RELAYLLM_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  return total;
}

Tensor CudaBackend::empty(std::vector<int64_t> shape, DType dtype) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.storage = device_alloc(impl_->ctx, t.bytes());
  return t;
}

Tensor CudaBackend::upload(std::span<const float> host, std::vector<int64_t> shape, DType dtype) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.storage = persistent_alloc(t.bytes());
  RELAYLLM_CHECK(size_t(t.numel()) == host.size(),
                 "cuda backend: upload of {} values into {} slots", host.size(), t.numel());
  cudaStream_t stream = impl_->ctx->stream;
  if (dtype == DType::kF32) {
    RELAYLLM_CUDA_CHECK(cudaMemcpyAsync(t.storage.get(), host.data(), host.size() * sizeof(float),
                                        cudaMemcpyHostToDevice, stream));
    return t;
  }
  std::vector<uint16_t> bits(host.size());
  if (dtype == DType::kBF16)
    for (size_t i = 0; i < host.size(); ++i) bits[i] = float_to_bf16(host[i]);
  else
    for (size_t i = 0; i < host.size(); ++i) bits[i] = float_to_fp16(host[i]);
  RELAYLLM_CUDA_CHECK(cudaMemcpyAsync(t.storage.get(), bits.data(), bits.size() * 2,
                                      cudaMemcpyHostToDevice, stream));
  return t;
}

void CudaBackend::download(const Tensor& tensor, std::span<float> host) {
  RELAYLLM_CHECK(size_t(tensor.numel()) == host.size(),
                 "cuda backend: download of {} values into {}", tensor.numel(), host.size());
  cudaStream_t stream = impl_->ctx->stream;
  std::shared_ptr<void> f32 = tensor.storage;
  if (tensor.dtype != DType::kF32) {
    f32 = device_alloc(impl_->ctx, host.size() * sizeof(float));
    cuda::launch_to_f32(tensor.dtype, tensor.storage.get(), tensor.numel(),
                        static_cast<float*>(f32.get()), stream);
  }
  const size_t bytes = host.size() * sizeof(float);
  Impl& m = *impl_;
  if (m.pinned_download && bytes > 0) {
    if (bytes > m.pinned_bytes) {
      RELAYLLM_CUDA_CHECK(cudaStreamSynchronize(stream));
      if (m.pinned) RELAYLLM_CUDA_CHECK(cudaFreeHost(m.pinned));
      m.pinned = nullptr;
      m.pinned_bytes = 0;
      const size_t grown = std::max(bytes, size_t(1) << 20);
      RELAYLLM_CUDA_CHECK(cudaMallocHost(&m.pinned, grown));
      m.pinned_bytes = grown;
    }
    RELAYLLM_CUDA_CHECK(
        cudaMemcpyAsync(m.pinned, f32.get(), bytes, cudaMemcpyDeviceToHost, stream));
    RELAYLLM_CUDA_CHECK(cudaStreamSynchronize(stream));
    std::memcpy(host.data(), m.pinned, bytes);
    return;
  }
  RELAYLLM_CUDA_CHECK(
      cudaMemcpyAsync(host.data(), f32.get(), bytes, cudaMemcpyDeviceToHost, stream));
  RELAYLLM_CUDA_CHECK(cudaStreamSynchronize(stream));
}

// A step is prepared in three parts: planning (the attention work list for this
// plan and layout), staging (every per-step array written to the pinned staging and
// uploaded to its fixed device region) and growing the buffers the kernels write
// (partials, arrival counts). Growing a buffer or moving the staging moves device
// addresses, which invalidates captured graphs.
cuda::AttentionWork CudaBackend::Impl::plan_attention(const BatchPlan& plan,
                                                      const AttentionShape& shape, DType dtype,
                                                      int32_t padded_rows) {
  work_shape = shape;
  if (shape.num_heads <= 0) return {};
  if (occupancy_dim != shape.head_dim || occupancy_dtype != dtype) {
    occupancy = cuda::prepare_attention(dtype, shape.head_dim);
    occupancy_dim = shape.head_dim;
    occupancy_dtype = dtype;
  }
  return cuda::build_attention_work(plan, work_options(shape, padded_rows));
}

bool CudaBackend::Impl::stage(const BatchPlan& plan, const cuda::AttentionWork& work,
                              int32_t padded_rows) {
  const size_t pad = size_t(padded_rows - plan.num_rows());
  num_units = int32_t(work.units.size());
  num_merged = int32_t(work.merges.size());
  const size_t logit_count = plan.logit_rows.size() + pad;
  std::vector<size_t> bytes(kNumRegions, 0);
  bytes[kTokenIds] = size_t(padded_rows) * sizeof(int32_t);
  bytes[kPositions] = size_t(padded_rows) * sizeof(int32_t);
  bytes[kSlotMapping] = size_t(padded_rows) * sizeof(int64_t);
  bytes[kLogitRows] = logit_count * sizeof(int32_t);
  bytes[kBlockTables] = plan.block_tables.size() * sizeof(int32_t);
  bytes[kCounts] = 2 * sizeof(int32_t);
  bytes[kSlots] = work.slots.size() * sizeof(cuda::QuerySlot);
  bytes[kUnits] = work.units.size() * sizeof(cuda::AttentionUnit);
  bytes[kMerges] = work.merges.size() * sizeof(cuda::MergeOutput);
  const bool moved = staging->layout(bytes, ctx->stream);

  // Padding rows: token 0 at position 0, KV not stored (slot -1), logits of row 0.
  cuda::StepStaging& st = *staging;
  put(st, kTokenIds, plan.token_ids);
  put(st, kPositions, plan.positions);
  put(st, kSlotMapping, plan.slot_mapping);
  put(st, kLogitRows, plan.logit_rows);
  std::fill_n(static_cast<int32_t*>(st.host(kTokenIds)) + plan.num_rows(), pad, 0);
  std::fill_n(static_cast<int32_t*>(st.host(kPositions)) + plan.num_rows(), pad, 0);
  std::fill_n(static_cast<int64_t*>(st.host(kSlotMapping)) + plan.num_rows(), pad, int64_t(-1));
  std::fill_n(static_cast<int32_t*>(st.host(kLogitRows)) + plan.logit_rows.size(), pad, 0);
  put(st, kBlockTables, plan.block_tables);
  const int32_t counts[2] = {num_units, num_merged};
  std::memcpy(st.host(kCounts), counts, sizeof(counts));
  put(st, kSlots, work.slots);
  put(st, kUnits, work.units);
  put(st, kMerges, work.merges);
  return moved;
}

bool CudaBackend::Impl::grow_buffers(const cuda::AttentionWork& work, const AttentionShape& shape,
                                     int32_t padded_rows) {
  bool moved = false;
  if (work.num_partials > partial_capacity) {
    RELAYLLM_CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
    partial_capacity = std::max<int64_t>(2 * int64_t(work.num_partials), 1024);
    const size_t d = size_t(std::max(shape.head_dim, 128));
    part_o = device_alloc(ctx, size_t(partial_capacity) * d * sizeof(float));
    part_lse = device_alloc(ctx, size_t(partial_capacity) * sizeof(float));
    moved = true;
  }
  // One arrival count per output, zero between launches (the kernel leaves them so).
  const int64_t outputs = int64_t(padded_rows) * std::max(shape.num_heads, 1);
  if (outputs > arrival_capacity) {
    RELAYLLM_CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
    arrival_capacity = std::max<int64_t>(2 * outputs, 4096);
    arrivals = device_alloc(ctx, size_t(arrival_capacity) * sizeof(int32_t));
    RELAYLLM_CUDA_CHECK(cudaMemsetAsync(arrivals.get(), 0,
                                        size_t(arrival_capacity) * sizeof(int32_t), ctx->stream));
    moved = true;
  }
  return moved;
}

void CudaBackend::begin_step(const BatchPlan& plan, const StepInfo& info) {
  Impl& m = *impl_;
  RELAYLLM_CHECK(!m.capturing, "cuda backend: begin_step while capturing a graph");
  RELAYLLM_CHECK(plan.positions.size() == plan.token_ids.size() &&
                     plan.slot_mapping.size() == plan.token_ids.size(),
                 "cuda backend: plan has {} token ids, {} positions, {} slots",
                 plan.token_ids.size(), plan.positions.size(), plan.slot_mapping.size());
  const int32_t rows = std::max(plan.num_rows(), info.padded_rows);
  m.rows = rows;
  const cuda::AttentionWork work = m.plan_attention(plan, info.attention, dtype_, rows);
  const bool staging_moved = m.stage(plan, work, rows);
  const bool buffers_moved = m.grow_buffers(work, info.attention, rows);
  if (staging_moved || buffers_moved) m.drop_graphs();  // they read the old addresses
  m.staging->upload(m.ctx->stream);
}

bool CudaBackend::supports_graphs() const { return true; }

void CudaBackend::capture_begin() {
  Impl& m = *impl_;
  RELAYLLM_CHECK(!m.capturing, "cuda backend: nested graph capture");
  // Thread-local: another thread's CUDA calls (a second engine) do not break this capture.
  RELAYLLM_CUDA_CHECK(cudaStreamBeginCapture(m.ctx->stream, cudaStreamCaptureModeThreadLocal));
  m.capturing = true;
}

void CudaBackend::capture_end(int64_t key) {
  Impl& m = *impl_;
  RELAYLLM_CHECK(m.capturing, "cuda backend: capture_end without capture_begin");
  m.capturing = false;
  cudaGraph_t graph = nullptr;
  RELAYLLM_CUDA_CHECK(cudaStreamEndCapture(m.ctx->stream, &graph));
  cudaGraphExec_t exec = nullptr;
  cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  RELAYLLM_CUDA_CHECK(err);
  auto slot = std::make_pair(key, m.attention_kinds());
  if (auto it = m.graphs.find(slot); it != m.graphs.end()) {
    RELAYLLM_CUDA_CHECK(cudaStreamSynchronize(m.ctx->stream));
    cudaGraphExecDestroy(it->second);
  }
  m.graphs[slot] = exec;
}

void CudaBackend::capture_cancel() {
  Impl& m = *impl_;
  if (!m.capturing) return;
  m.capturing = false;
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(m.ctx->stream, &graph);
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();  // a capture broken by an error leaves it pending
}

bool CudaBackend::replay(int64_t key) {
  Impl& m = *impl_;
  auto it = m.graphs.find(std::make_pair(key, m.attention_kinds()));
  if (it == m.graphs.end()) return false;
  RELAYLLM_CUDA_CHECK(cudaGraphLaunch(it->second, m.ctx->stream));
  return true;
}

void CudaBackend::embedding(const Tensor& table, const BatchPlan& plan, Tensor& out) {
  int64_t vocab = table.rows();
  for (int32_t id : plan.token_ids)
    RELAYLLM_CHECK(id >= 0 && id < vocab, "token id {} is outside the vocabulary [0, {})", id,
                   vocab);
  cuda::launch_embedding(table.dtype, table.storage.get(),
                         static_cast<const int32_t*>(impl_->staging->device(kTokenIds)), out.rows(),
                         table.cols(), out.storage.get(), impl_->ctx->stream);
}

void CudaBackend::rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  int64_t n = weight.numel();
  if (impl_->decode_row_kernels &&
      cuda::launch_rmsnorm_registers(x.dtype, x.storage.get(), weight.storage.get(), eps,
                                     x.numel() / n, n, out.storage.get(), impl_->ctx->stream))
    return;
  cuda::launch_rmsnorm(x.dtype, x.storage.get(), weight.storage.get(), eps, x.numel() / n, n,
                       out.storage.get(), impl_->ctx->stream);
}

void CudaBackend::add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps,
                              Tensor& out) {
  int64_t n = weight.numel();
  if (impl_->decode_row_kernels &&
      cuda::launch_add_rmsnorm_registers(x.dtype, residual.storage.get(), x.storage.get(),
                                         weight.storage.get(), eps, x.numel() / n, n,
                                         out.storage.get(), impl_->ctx->stream))
    return;
  cuda::launch_add_rmsnorm(x.dtype, residual.storage.get(), x.storage.get(), weight.storage.get(),
                           eps, x.numel() / n, n, out.storage.get(), impl_->ctx->stream);
}

bool CudaBackend::supports_weight_format(WeightFormat format) const {
  return format == WeightFormat::kFP8 && impl_->fp8;
}

const char* CudaBackend::last_fp8_path() const { return impl_->fp8_path; }

Tensor CudaBackend::upload_blocks(WeightFormat format, std::span<const std::byte> bytes,
                                  std::vector<int64_t> shape) {
  RELAYLLM_CHECK(format == WeightFormat::kFP8,
                 "cuda backend: weights in format {} are not supported (FP8 only)",
                 weight_format_name(format));
  RELAYLLM_CHECK(impl_->fp8,
                 "cuda backend: FP8 weights need FP8 tensor cores (sm_89 or newer); use a "
                 "16-bit checkpoint or --device cpu");
  RELAYLLM_CHECK(shape.size() == 2 && shape[1] % kFp8ColumnMultiple == 0,
                 "cuda backend: an FP8 weight must be 2-D with a multiple of {} columns",
                 kFp8ColumnMultiple);
  Tensor t;
  t.dtype = dtype_;  // what the op produces
  t.format = format;
  t.shape = std::move(shape);
  RELAYLLM_CHECK(bytes.size() == t.bytes(), "cuda backend: {} bytes for an FP8 weight of {} bytes",
                 bytes.size(), t.bytes());
  t.storage = persistent_alloc(bytes.size());
  RELAYLLM_CUDA_CHECK(cudaMemcpyAsync(t.storage.get(), bytes.data(), bytes.size(),
                                      cudaMemcpyHostToDevice, impl_->ctx->stream));
  return t;
}

// The FP8 linear op (backend/fp8_weight.h): the activations are quantized per token (or by the
// checkpoint's static scale, read on the device), then one FP8 GEMM.
void CudaBackend::linear_fp8(const Tensor& x, const Tensor& weight, const Tensor* bias,
                             Tensor& out) {
  const int64_t k = weight.cols(), n = weight.rows(), t = x.numel() / k;
  RELAYLLM_CHECK(x.cols() == k, "linear: input has {} columns, weight expects {}", x.cols(), k);
  RELAYLLM_CHECK(out.numel() == t * n, "linear: output holds {} values, needs {}", out.numel(),
                 t * n);
  RELAYLLM_CHECK(
      x.dtype != DType::kF32 && (out.dtype == x.dtype || (out.dtype == DType::kF32 && !bias)),
      "linear: cuda FP8 needs 16-bit x, out of its dtype or float32 (without bias)");
  if (t == 0) return;
  Impl& m = *impl_;
  cudaStream_t stream = m.ctx->stream;
  const auto* base = static_cast<const uint8_t*>(weight.storage.get());
  const auto* w_scales = reinterpret_cast<const float*>(base + size_t(n) * size_t(k));
  const float* input_scale = w_scales + n;
  // Decode: quantization and product in one launch where x's codes fit a CTA's shared memory.
  if (t <= m.fp8_gemv_max_tokens && m.fp8_fused_gemv && out.dtype == x.dtype &&
      cuda::launch_fp8_fused_gemv(x.dtype, x.storage.get(), input_scale, base, w_scales, t, n, k,
                                  out.storage.get(), stream)) {
    m.fp8_path = "fused-gemv";
    if (bias)
      cuda::launch_add_bias(out.dtype, out.storage.get(), bias->storage.get(), t, n, stream);
    return;
  }
  std::shared_ptr<void> x_codes = device_alloc(m.ctx, size_t(t) * size_t(k));
  std::shared_ptr<void> x_scales = device_alloc(m.ctx, size_t(t) * sizeof(float));
  cuda::launch_quantize_fp8_rows(x.dtype, x.storage.get(), t, k, input_scale,
                                 static_cast<uint8_t*>(x_codes.get()),
                                 static_cast<float*>(x_scales.get()), stream);
  if (t <= m.fp8_gemv_max_tokens) {
    m.fp8_path = "gemv";
    cuda::launch_fp8_gemv(out.dtype, base, w_scales, static_cast<const uint8_t*>(x_codes.get()),
                          static_cast<const float*>(x_scales.get()), t, n, k, out.storage.get(),
                          stream);
    if (bias)
      cuda::launch_add_bias(out.dtype, out.storage.get(), bias->storage.get(), t, n, stream);
    return;
  }
  const cuda::CublasLtApi& api = cuda::cublaslt_api();
  const float alpha = 1.0f, beta = 0.0f;
  GemmPlan* plan = m.fp8_outer ? m.fp8_gemm_plan(t, n, k, out.dtype, true) : nullptr;
  bool outer_ran = plan != nullptr;
  if (plan) {
    // A is the weight (M = n rows of the product), B the activations (N = t).
    const void* a_scale = w_scales;
    const void* b_scale = x_scales.get();
    RELAYLLM_CUBLAS_CHECK(
        api.desc_set(plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale, sizeof(a_scale)));
    RELAYLLM_CUBLAS_CHECK(
        api.desc_set(plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale, sizeof(b_scale)));
    const cublasStatus_t st =
        api.matmul(m.lt, plan->desc, &alpha, base, plan->a, x_codes.get(), plan->b, &beta,
                   out.storage.get(), plan->c, out.storage.get(), plan->c, &plan->algo,
                   m.workspace.get(), m.workspace_bytes, stream);
    // A cuBLASLt that lists an algorithm but refuses the call: unit scales from now on.
    if (st != CUBLAS_STATUS_SUCCESS) m.fp8_outer = outer_ran = false;
  }
  m.fp8_path = outer_ran ? "outer-vector" : "unit+rescale";
  if (!outer_ran) {
    GemmPlan* unit = m.fp8_gemm_plan(t, n, k, DType::kF32, false);
    std::shared_ptr<void> acc = device_alloc(m.ctx, size_t(t) * size_t(n) * sizeof(float));
    RELAYLLM_CUBLAS_CHECK(api.matmul(m.lt, unit->desc, &alpha, base, unit->a, x_codes.get(),
                                     unit->b, &beta, acc.get(), unit->c, acc.get(), unit->c,
                                     &unit->algo, m.workspace.get(), m.workspace_bytes, stream));
    cuda::launch_fp8_rescale(out.dtype, static_cast<const float*>(acc.get()),
                             static_cast<const float*>(x_scales.get()), w_scales, t, n,
                             out.storage.get(), stream);
  }
  if (bias) cuda::launch_add_bias(out.dtype, out.storage.get(), bias->storage.get(), t, n, stream);
}

namespace {

// Checks a projection's operands: x [T, K] and `rows` weight rows of K, 16-bit, one dtype.
void check_linear(const Tensor& x, const Tensor& weight, const char* op) {
  RELAYLLM_CHECK(
      weight.format == WeightFormat::kNone && x.dtype == weight.dtype && x.dtype != DType::kF32,
      "{}: cuda needs 16-bit x and weight of one dtype", op);
  RELAYLLM_CHECK(x.cols() == weight.cols(), "{}: input has {} columns, weight expects {}", op,
                 x.cols(), weight.cols());
}

const std::byte* weight_rows(const Tensor& w, int64_t first_row) {
  return static_cast<const std::byte*>(w.storage.get()) +
         first_row * w.cols() * int64_t(dtype_size(w.dtype));
}

// The skinny kernel's arguments for x [t, k] times `rows` rows of w, as one output part; the
// caller fills the outputs (and, for several parts, their ends).
cuda::SkinnyGemmArgs skinny_args(const Tensor& x, const Tensor& w, int64_t t, int64_t k,
                                 int64_t rows, bool programmatic) {
  cuda::SkinnyGemmArgs args;
  args.dtype = x.dtype;
  args.x = x.storage.get();
  args.w = w.storage.get();
  args.t = t;
  args.k = k;
  args.rows = rows;
  args.part_end[0] = args.part_end[1] = args.part_end[2] = rows;
  args.programmatic = programmatic;
  return args;
}

}  // namespace

bool CudaBackend::skinny(int64_t t, int64_t k, const void* x, const void* w) const {
  return t <= impl_->skinny_rows && cuda::skinny_gemm_fits(t, k, x, w);
}

void CudaBackend::gemm(const void* x, const void* w, int64_t t, int64_t n, int64_t k,
                       const void* bias, void* out, DType out_dtype) {
  if (t == 0 || n == 0) return;
  Impl& m = *impl_;
  GemmPlan& plan = m.gemm_plan(t, n, k, dtype_, out_dtype);
  float alpha = 1.0f, beta = 0.0f;
  RELAYLLM_CUBLAS_CHECK(cuda::cublaslt_api().matmul(
      m.lt, plan.desc, &alpha, w, plan.a, x, plan.b, &beta, out, plan.c, out, plan.c, &plan.algo,
      m.workspace.get(), m.workspace_bytes, m.ctx->stream));
  if (bias) cuda::launch_add_bias(out_dtype, out, bias, t, n, m.ctx->stream);
}

void CudaBackend::linear(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor& out) {
  // FP8 weights have their own kernels (the skinny kernel reads 16-bit weights only).
  if (weight.format == WeightFormat::kFP8) return linear_fp8(x, weight, bias, out);
  int64_t k = weight.cols(), n = weight.rows(), t = x.numel() / k;
  check_linear(x, weight, "linear");
  RELAYLLM_CHECK(out.numel() == t * n, "linear: output holds {} values, needs {}", out.numel(),
                 t * n);
  RELAYLLM_CHECK(out.dtype == weight.dtype || (out.dtype == DType::kF32 && !bias),
                 "linear: out must be of the weight's dtype, or float32 without bias");
  if (t == 0) return;
  if (skinny(t, k, x.storage.get(), weight.storage.get())) {
    cuda::SkinnyGemmArgs args = skinny_args(x, weight, t, k, n, impl_->programmatic);
    args.out[0] = out.storage.get();
    args.bias[0] = bias ? bias->storage.get() : nullptr;
    args.out_f32 = out.dtype == DType::kF32;
    cuda::launch_skinny_gemm(args, impl_->ctx->stream);
    return;
  }
  gemm(x.storage.get(), weight.storage.get(), t, n, k, bias ? bias->storage.get() : nullptr,
       out.storage.get(), out.dtype);
}

Tensor CudaBackend::fuse_rows(std::span<const Tensor> parts) {
  if (!impl_->fuse_weights || parts.size() < 2) return {};
  int64_t rows = 0;
  for (const Tensor& p : parts) {
    if (!p.defined() || p.format != WeightFormat::kNone || p.dtype != dtype_ ||
        p.shape.size() != 2 || p.cols() != parts[0].cols())
      return {};
    rows += p.rows();
  }
  Tensor fused;
  fused.dtype = dtype_;
  fused.shape = {rows, parts[0].cols()};
  fused.storage = persistent_alloc(fused.bytes());
  size_t offset = 0;
  for (const Tensor& p : parts) {
    RELAYLLM_CUDA_CHECK(cudaMemcpyAsync(static_cast<std::byte*>(fused.storage.get()) + offset,
                                        p.storage.get(), p.bytes(), cudaMemcpyDeviceToDevice,
                                        impl_->ctx->stream));
    offset += p.bytes();
  }
  return fused;
}

void CudaBackend::linear_parts(const Tensor& x, const Tensor& fused,
                               std::span<const Tensor* const> biases,
                               std::span<Tensor* const> outs) {
  check_linear(x, fused, "linear_parts");
  const int64_t k = fused.cols(), t = x.rows();
  RELAYLLM_CHECK(biases.size() == outs.size(), "linear_parts: {} biases for {} outputs",
                 biases.size(), outs.size());
  int64_t rows = 0;
  for (size_t p = 0; p < outs.size(); ++p) {
    const Tensor& out = *outs[p];
    RELAYLLM_CHECK(out.dtype == dtype_ && out.rows() == t,
                   "linear_parts: output {} is not [{}, *] of the compute dtype", p, t);
    RELAYLLM_CHECK(!biases[p] || biases[p]->numel() == out.cols(),
                   "linear_parts: bias {} has {} values for {} columns", p, biases[p]->numel(),
                   out.cols());
    rows += out.cols();
  }
  RELAYLLM_CHECK(rows == fused.rows(), "linear_parts: outputs take {} rows of a {}-row weight",
                 rows, fused.rows());
  if (t == 0) return;
  if (outs.size() <= 3 && skinny(t, k, x.storage.get(), fused.storage.get())) {
    cuda::SkinnyGemmArgs args = skinny_args(x, fused, t, k, rows, impl_->programmatic);
    int64_t end = 0;
    for (size_t p = 0; p < 3; ++p) {
      if (p < outs.size()) {
        end += outs[p]->cols();
        args.out[p] = outs[p]->storage.get();
        args.bias[p] = biases[p] ? biases[p]->storage.get() : nullptr;
      }
      args.part_end[p] = end;
    }
    cuda::launch_skinny_gemm(args, impl_->ctx->stream);
    return;
  }
  int64_t first = 0;
  for (size_t p = 0; p < outs.size(); ++p) {
    const int64_t n = outs[p]->cols();
    gemm(x.storage.get(), weight_rows(fused, first), t, n, k,
         biases[p] ? biases[p]->storage.get() : nullptr, outs[p]->storage.get(), dtype_);
    first += n;
  }
}

void CudaBackend::linear_silu_mul(const Tensor& x, const Tensor& gate_up, Tensor& gate, Tensor& up,
                                  Tensor& out) {
  check_linear(x, gate_up, "linear_silu_mul");
  const int64_t k = gate_up.cols(), t = x.rows(), inter = gate_up.rows() / 2;
  RELAYLLM_CHECK(gate_up.rows() == 2 * inter && out.numel() == t * inter &&
                     gate.numel() >= t * inter && up.numel() >= t * inter && out.dtype == dtype_,
                 "linear_silu_mul: a [2 x {}, {}] weight needs [{}, {}] out, gate and up", inter, k,
                 t, inter);
  if (t == 0) return;
  if (skinny(t, k, x.storage.get(), gate_up.storage.get())) {
    cuda::SkinnyGemmArgs args = skinny_args(x, gate_up, t, k, inter, impl_->programmatic);
    args.out[0] = out.storage.get();
    args.gated = true;
    cuda::launch_skinny_gemm(args, impl_->ctx->stream);
    return;
  }
  gemm(x.storage.get(), weight_rows(gate_up, 0), t, inter, k, nullptr, gate.storage.get(), dtype_);
  gemm(x.storage.get(), weight_rows(gate_up, inter), t, inter, k, nullptr, up.storage.get(),
       dtype_);
  cuda::launch_silu_mul(dtype_, gate.storage.get(), up.storage.get(), t * inter, out.storage.get(),
                        impl_->ctx->stream);
}

void CudaBackend::rope_write_kv(Tensor& q, Tensor& k, const Tensor& v, const Tensor& cos_sin,
                                KvLayer& kv, const BatchPlan& plan) {
  if (!impl_->decode_row_kernels) {
    rope(q, k, cos_sin, plan);
    write_kv(k, v, kv, plan);
    return;
  }
  const int64_t d = cos_sin.cols(), max_pos = cos_sin.rows(), rows = q.dim(0);
  RELAYLLM_CHECK(cos_sin.dtype == DType::kF32, "rope: the cos/sin table must be float32");
  for (int32_t pos : plan.positions)
    RELAYLLM_CHECK(pos >= 0 && pos < max_pos, "position {} is beyond the rope table ({} positions)",
                   pos, max_pos);
  if (rows == 0) return;
  const int64_t row_size = k.numel() / rows;
  RELAYLLM_CHECK(v.numel() == k.numel() && row_size % d == 0,
                 "rope_write_kv: k holds {} values and v {}", k.numel(), v.numel());
  const int64_t pool_slots = kv.k.numel() / row_size;
  for (int64_t slot : plan.slot_mapping)
    RELAYLLM_CHECK(slot >= 0 && slot < pool_slots, "kv slot {} is outside the pool ({} slots)",
                   slot, pool_slots);
  cuda::launch_rope_write_kv(q.dtype, q.storage.get(), k.storage.get(), v.storage.get(),
                             cos_sin.data<float>(),
                             static_cast<const int32_t*>(impl_->staging->device(kPositions)),
                             static_cast<const int64_t*>(impl_->staging->device(kSlotMapping)),
                             rows, q.numel() / (rows * d), row_size / d, d, kv.k.storage.get(),
                             kv.v.storage.get(), impl_->ctx->stream);
}

void CudaBackend::rope(Tensor& q, Tensor& k, const Tensor& cos_sin, const BatchPlan& plan) {
  int64_t d = cos_sin.cols(), max_pos = cos_sin.rows(), rows = q.dim(0);
  RELAYLLM_CHECK(cos_sin.dtype == DType::kF32, "rope: the cos/sin table must be float32");
  for (int32_t pos : plan.positions)
    RELAYLLM_CHECK(pos >= 0 && pos < max_pos, "position {} is beyond the rope table ({} positions)",
                   pos, max_pos);
  if (rows == 0) return;
  cuda::launch_rope(q.dtype, q.storage.get(), k.storage.get(), cos_sin.data<float>(),
                    static_cast<const int32_t*>(impl_->staging->device(kPositions)), rows,
                    q.numel() / (rows * d), k.numel() / (rows * d), d, impl_->ctx->stream);
}

void CudaBackend::silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  cuda::launch_silu_mul(gate.dtype, gate.storage.get(), up.storage.get(), gate.numel(),
                        out.storage.get(), impl_->ctx->stream);
}

void CudaBackend::write_kv(const Tensor& k, const Tensor& v, KvLayer& kv, const BatchPlan& plan) {
  const int64_t rows = k.dim(0);
  if (rows == 0) return;
  int64_t row_size = k.numel() / rows;
  int64_t pool_slots = kv.k.numel() / row_size;
  for (int64_t slot : plan.slot_mapping)
    RELAYLLM_CHECK(slot >= 0 && slot < pool_slots, "kv slot {} is outside the pool ({} slots)",
                   slot, pool_slots);
  cuda::launch_write_kv(k.dtype, k.storage.get(), v.storage.get(),
                        static_cast<const int64_t*>(impl_->staging->device(kSlotMapping)), rows,
                        row_size, kv.k.storage.get(), kv.v.storage.get(), impl_->ctx->stream);
}

void CudaBackend::attention(const Tensor& q, const KvLayer& kv, const AttentionShape& shape,
                            const BatchPlan& plan, Tensor& out) {
  Impl& m = *impl_;
  const int32_t d = shape.head_dim;
  const AttentionShape& staged = m.work_shape;
  if (staged.num_heads != shape.num_heads || staged.num_kv_heads != shape.num_kv_heads ||
      staged.head_dim != shape.head_dim) {
    // The step was begun without this layout (op-level callers): stage it now.
    RELAYLLM_CHECK(!m.capturing, "cuda backend: attention layout not staged before graph capture");
    begin_step(plan, StepInfo{shape, int32_t(q.dim(0))});
  }
  RELAYLLM_CHECK(q.dim(0) == m.rows && out.dim(0) == m.rows,
                 "attention: q has {} rows and out {}, the step {}", q.dim(0), out.dim(0), m.rows);
  const cuda::StepStaging& st = *m.staging;
  cuda::AttentionArgs args{};
  args.dtype = q.dtype;
  args.head_dim = d;
  args.num_heads = shape.num_heads;
  args.num_kv_heads = shape.num_kv_heads;
  args.block_size = plan.block_size;
  args.block_shift = std::has_single_bit(uint32_t(plan.block_size))
                         ? std::countr_zero(uint32_t(plan.block_size))
                         : -1;
  args.scale = shape.scale;
  args.q = q.storage.get();
  args.k_cache = kv.k.storage.get();
  args.v_cache = kv.v.storage.get();
  args.block_tables = static_cast<const int32_t*>(st.device(kBlockTables));
  args.slots = static_cast<const cuda::QuerySlot*>(st.device(kSlots));
  args.units = static_cast<const cuda::AttentionUnit*>(st.device(kUnits));
  args.counts = static_cast<const int32_t*>(st.device(kCounts));
  args.cursor = static_cast<int32_t*>(m.cursor.get());
  args.arrivals = static_cast<int32_t*>(m.arrivals.get());
  // A graph keeps its grid for later steps, so it takes the whole GPU's worth of
  // CTAs; an eager launch needs no more CTAs than units.
  const int32_t cap = m.occupancy.ctas_per_sm * m.num_sms;
  args.grid = m.num_units == 0 ? 0 : m.capturing ? cap : std::min(m.num_units, cap);
  args.partial_o = static_cast<float*>(m.part_o.get());
  args.partial_lse = static_cast<float*>(m.part_lse.get());
  args.merges = static_cast<const cuda::MergeOutput*>(st.device(kMerges));
  args.out = out.storage.get();
  cuda::launch_attention(args, m.ctx->stream);
}

void CudaBackend::gather_logit_rows(const Tensor& x, const BatchPlan& plan, Tensor& out) {
  (void)plan;
  cuda::launch_gather_rows(x.dtype, x.storage.get(),
                           static_cast<const int32_t*>(impl_->staging->device(kLogitRows)),
                           out.rows(), x.cols(), out.storage.get(), impl_->ctx->stream);
}

}  // namespace relayllm
