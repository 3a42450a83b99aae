#include "relayllm/backend/cuda/cuda_backend.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "relayllm/backend/cuda/attention_work.h"
#include "relayllm/backend/cuda/cublaslt_loader.h"
#include "relayllm/backend/cuda/cuda_attention.cuh"
#include "relayllm/backend/cuda/cuda_check.h"
#include "relayllm/common/error.h"
#include "relayllm/backend/cuda/cuda_ops.cuh"
#include "relayllm/common/half.h"

namespace relayllm {
namespace {

#define RELAYLLM_CUBLAS_CHECK(expr)                                                         \
  do {                                                                                      \
    cublasStatus_t relayllm_st_ = (expr);                                                   \
    if (relayllm_st_ != CUBLAS_STATUS_SUCCESS)                                              \
      ::relayllm::fail("cublasLt: {} failed with status {}", #expr, int(relayllm_st_));     \
  } while (0)

// The stream and the stream-ordered pool every allocation comes from. Tensors hold
// it through their deleters, so memory is freed in stream order even when a tensor
// outlives the backend.
struct Context {
  int device = 0;
  cudaStream_t stream = nullptr;
  cudaStream_t side = nullptr;  // the attention's second stream (relay prefixes)
  cudaEvent_t fork = nullptr, join = nullptr;
  ~Context() {
    if (stream) {
      cudaStreamSynchronize(stream);
      cudaStreamDestroy(stream);
    }
    if (side) {
      cudaStreamSynchronize(side);
      cudaStreamDestroy(side);
    }
    if (fork) cudaEventDestroy(fork);
    if (join) cudaEventDestroy(join);
  }
};

std::shared_ptr<void> device_alloc(const std::shared_ptr<Context>& ctx, size_t bytes) {
  void* p = nullptr;
  RELAYLLM_CUDA_CHECK(cudaMallocAsync(&p, std::max<size_t>(bytes, 16), ctx->stream));
  return std::shared_ptr<void>(p, [ctx](void* q) { cudaFreeAsync(q, ctx->stream); });
}

template <typename T>
std::shared_ptr<void> stage(const std::shared_ptr<Context>& ctx, const std::vector<T>& host) {
  std::shared_ptr<void> buf = device_alloc(ctx, host.size() * sizeof(T));
  // From pageable memory the copy returns once the source is staged, so `host` may change after.
  if (!host.empty())
    RELAYLLM_CUDA_CHECK(cudaMemcpyAsync(buf.get(), host.data(), host.size() * sizeof(T),
                                        cudaMemcpyHostToDevice, ctx->stream));
  return buf;
}

cudaDataType_t cuda_type(DType dtype) {
  switch (dtype) {
    case DType::kBF16: return CUDA_R_16BF;
    case DType::kF16: return CUDA_R_16F;
    default: return CUDA_R_32F;
  }
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
  std::map<std::tuple<int64_t, int64_t, int64_t, int>, GemmPlan> gemm_plans;
  int num_sms = 0;
  bool split_kv = true;
  int32_t items_per_sm = 4, min_split = 128;
  bool overlap_attention = true;

  // Arrays of the current step's plan on the device.
  std::shared_ptr<void> token_ids, positions, slot_mapping, block_tables, logit_rows;
  // The attention work list of this step, built at the first attention call.
  int32_t work_hq = -1, work_hk = -1;
  cuda::AttentionWork work;
  std::shared_ptr<void> w_slots, w_narrow, w_wide, w_offsets, w_partials, part_o, part_lse;
  int64_t part_o_floats = 0;

  ~Impl() {
    const cuda::CublasLtApi* api = lt ? &cuda::cublaslt_api() : nullptr;
    for (auto& [key, plan] : gemm_plans) {
      api->layout_destroy(plan.a);
      api->layout_destroy(plan.b);
      api->layout_destroy(plan.c);
      api->desc_destroy(plan.desc);
    }
    if (lt) api->destroy(lt);
  }

  GemmPlan& gemm_plan(int64_t t, int64_t n, int64_t k, DType dtype) {
    auto key = std::make_tuple(t, n, k, int(dtype));
    auto it = gemm_plans.find(key);
    if (it != gemm_plans.end()) return it->second;
    const cuda::CublasLtApi& api = cuda::cublaslt_api();
    GemmPlan plan;
    // Column-major view: out^T [N, T] = W [N, K] (stored as col-major K x N, transposed) * x^T [K, T].
    RELAYLLM_CUBLAS_CHECK(api.desc_create(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    RELAYLLM_CUBLAS_CHECK(api.desc_set(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
    RELAYLLM_CUBLAS_CHECK(api.desc_set(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
    cudaDataType_t type = cuda_type(dtype);
    RELAYLLM_CUBLAS_CHECK(api.layout_create(&plan.a, type, uint64_t(k), uint64_t(n), k));
    RELAYLLM_CUBLAS_CHECK(api.layout_create(&plan.b, type, uint64_t(k), uint64_t(t), k));
    RELAYLLM_CUBLAS_CHECK(api.layout_create(&plan.c, type, uint64_t(n), uint64_t(t), n));
    cublasLtMatmulPreference_t pref = nullptr;
    RELAYLLM_CUBLAS_CHECK(api.pref_create(&pref));
    RELAYLLM_CUBLAS_CHECK(api.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                       sizeof(workspace_bytes)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    cublasStatus_t st = api.heuristic(lt, plan.desc, plan.a, plan.b, plan.c, plan.c, pref, 1, &result, &found);
    api.pref_destroy(pref);
    RELAYLLM_CHECK(st == CUBLAS_STATUS_SUCCESS && found > 0,
                   "cublasLt: no algorithm for linear [{} x {}] * [{} x {}]^T (status {})", t, k, n, k,
                   int(st));
    plan.algo = result.algo;
    return gemm_plans.emplace(key, plan).first->second;
  }
};

bool cuda_device_available() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
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
  impl_->split_kv = options.split_kv;
  impl_->items_per_sm = options.attention_items_per_sm;
  impl_->min_split = options.attention_min_split;
  impl_->overlap_attention = options.overlap_attention;
  impl_->ctx = std::make_shared<Context>();
  impl_->ctx->device = options.device;
  RELAYLLM_CUDA_CHECK(cudaStreamCreateWithFlags(&impl_->ctx->stream, cudaStreamNonBlocking));
  RELAYLLM_CUDA_CHECK(cudaStreamCreateWithFlags(&impl_->ctx->side, cudaStreamNonBlocking));
  RELAYLLM_CUDA_CHECK(cudaEventCreateWithFlags(&impl_->ctx->fork, cudaEventDisableTiming));
  RELAYLLM_CUDA_CHECK(cudaEventCreateWithFlags(&impl_->ctx->join, cudaEventDisableTiming));
  // Keep freed blocks in the pool: every step allocates and frees the same activations.
  cudaMemPool_t pool;
  RELAYLLM_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, options.device));
  uint64_t threshold = UINT64_MAX;
  RELAYLLM_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  RELAYLLM_CUBLAS_CHECK(cuda::cublaslt_api().create(&impl_->lt));
  impl_->workspace = device_alloc(impl_->ctx, impl_->workspace_bytes);
}

CudaBackend::~CudaBackend() {
  if (impl_ && impl_->ctx) cudaStreamSynchronize(impl_->ctx->stream);
}

void* CudaBackend::stream() const { return impl_->ctx->stream; }

void CudaBackend::synchronize() { RELAYLLM_CUDA_CHECK(cudaStreamSynchronize(impl_->ctx->stream)); }

size_t CudaBackend::free_memory() const {
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
  Tensor t = empty(std::move(shape), dtype);
  RELAYLLM_CHECK(size_t(t.numel()) == host.size(), "cuda backend: upload of {} values into {} slots",
                 host.size(), t.numel());
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
  RELAYLLM_CHECK(size_t(tensor.numel()) == host.size(), "cuda backend: download of {} values into {}",
                 tensor.numel(), host.size());
  cudaStream_t stream = impl_->ctx->stream;
  std::shared_ptr<void> f32 = tensor.storage;
  if (tensor.dtype != DType::kF32) {
    f32 = device_alloc(impl_->ctx, host.size() * sizeof(float));
    cuda::launch_to_f32(tensor.dtype, tensor.storage.get(), tensor.numel(), static_cast<float*>(f32.get()),
                        stream);
  }
  RELAYLLM_CUDA_CHECK(cudaMemcpyAsync(host.data(), f32.get(), host.size() * sizeof(float),
                                      cudaMemcpyDeviceToHost, stream));
  RELAYLLM_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void CudaBackend::begin_step(const BatchPlan& plan) {
  Impl& m = *impl_;
  m.token_ids = stage(m.ctx, plan.token_ids);
  m.positions = stage(m.ctx, plan.positions);
  m.slot_mapping = stage(m.ctx, plan.slot_mapping);
  m.block_tables = stage(m.ctx, plan.block_tables);
  m.logit_rows = stage(m.ctx, plan.logit_rows);
  m.work_hq = m.work_hk = -1;
}

void CudaBackend::embedding(const Tensor& table, const BatchPlan& plan, Tensor& out) {
  int64_t vocab = table.rows();
  for (int32_t id : plan.token_ids)
    RELAYLLM_CHECK(id >= 0 && id < vocab, "token id {} is outside the vocabulary [0, {})", id, vocab);
  cuda::launch_embedding(table.dtype, table.storage.get(), static_cast<const int32_t*>(impl_->token_ids.get()),
                         plan.num_rows(), table.cols(), out.storage.get(), impl_->ctx->stream);
}

void CudaBackend::rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  int64_t n = weight.numel();
  cuda::launch_rmsnorm(x.dtype, x.storage.get(), weight.storage.get(), eps, x.numel() / n, n,
                       out.storage.get(), impl_->ctx->stream);
}

void CudaBackend::add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps,
                              Tensor& out) {
  int64_t n = weight.numel();
  cuda::launch_add_rmsnorm(x.dtype, residual.storage.get(), x.storage.get(), weight.storage.get(), eps,
                           x.numel() / n, n, out.storage.get(), impl_->ctx->stream);
}

void CudaBackend::linear(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor& out) {
  int64_t k = weight.cols(), n = weight.rows(), t = x.numel() / k;
  RELAYLLM_CHECK(x.cols() == k, "linear: input has {} columns, weight expects {}", x.cols(), k);
  RELAYLLM_CHECK(out.numel() == t * n, "linear: output holds {} values, needs {}", out.numel(), t * n);
  RELAYLLM_CHECK(x.dtype == weight.dtype && out.dtype == weight.dtype && x.dtype != DType::kF32,
                 "linear: cuda needs 16-bit x, weight and out of one dtype");
  if (t == 0) return;
  Impl& m = *impl_;
  GemmPlan& plan = m.gemm_plan(t, n, k, x.dtype);
  float alpha = 1.0f, beta = 0.0f;
  RELAYLLM_CUBLAS_CHECK(cuda::cublaslt_api().matmul(
      m.lt, plan.desc, &alpha, weight.storage.get(), plan.a, x.storage.get(), plan.b, &beta,
      out.storage.get(), plan.c, out.storage.get(), plan.c, &plan.algo, m.workspace.get(),
      m.workspace_bytes, m.ctx->stream));
  if (bias) cuda::launch_add_bias(out.dtype, out.storage.get(), bias->storage.get(), t, n, m.ctx->stream);
}

void CudaBackend::rope(Tensor& q, Tensor& k, const Tensor& cos_sin, const BatchPlan& plan) {
  int64_t d = cos_sin.cols(), max_pos = cos_sin.rows(), rows = plan.num_rows();
  RELAYLLM_CHECK(cos_sin.dtype == DType::kF32, "rope: the cos/sin table must be float32");
  for (int32_t pos : plan.positions)
    RELAYLLM_CHECK(pos >= 0 && pos < max_pos, "position {} is beyond the rope table ({} positions)",
                   pos, max_pos);
  if (rows == 0) return;
  cuda::launch_rope(q.dtype, q.storage.get(), k.storage.get(), cos_sin.data<float>(),
                    static_cast<const int32_t*>(impl_->positions.get()), rows, q.numel() / (rows * d),
                    k.numel() / (rows * d), d, impl_->ctx->stream);
}

void CudaBackend::silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  cuda::launch_silu_mul(gate.dtype, gate.storage.get(), up.storage.get(), gate.numel(), out.storage.get(),
                        impl_->ctx->stream);
}

void CudaBackend::write_kv(const Tensor& k, const Tensor& v, KvLayer& kv, const BatchPlan& plan) {
  if (plan.num_rows() == 0) return;
  int64_t row_size = k.numel() / plan.num_rows();
  int64_t pool_slots = kv.k.numel() / row_size;
  for (int64_t slot : plan.slot_mapping)
    RELAYLLM_CHECK(slot >= 0 && slot < pool_slots, "kv slot {} is outside the pool ({} slots)", slot,
                   pool_slots);
  cuda::launch_write_kv(k.dtype, k.storage.get(), v.storage.get(),
                        static_cast<const int64_t*>(impl_->slot_mapping.get()), plan.num_rows(), row_size,
                        kv.k.storage.get(), kv.v.storage.get(), impl_->ctx->stream);
}

void CudaBackend::attention(const Tensor& q, const KvLayer& kv, const AttentionShape& shape,
                            const BatchPlan& plan, Tensor& out) {
  Impl& m = *impl_;
  const int32_t d = shape.head_dim;
  if (m.work_hq != shape.num_heads || m.work_hk != shape.num_kv_heads) {
    cuda::AttentionWorkOptions options;
    options.num_heads = shape.num_heads;
    options.num_kv_heads = shape.num_kv_heads;
    options.num_sms = m.num_sms;
    options.split = m.split_kv;
    options.items_per_sm = m.items_per_sm;
    options.min_split = m.min_split;
    m.work = cuda::build_attention_work(plan, options);
    m.w_slots = stage(m.ctx, m.work.slots);
    m.w_narrow = stage(m.ctx, m.work.narrow);
    m.w_wide = stage(m.ctx, m.work.wide);
    m.w_offsets = stage(m.ctx, m.work.merge_offsets);
    m.w_partials = stage(m.ctx, m.work.merge_partials);
    int64_t floats = int64_t(m.work.num_partials) * d;
    if (floats > m.part_o_floats || !m.part_o) {
      m.part_o = device_alloc(m.ctx, size_t(floats) * sizeof(float));
      m.part_lse = device_alloc(m.ctx, size_t(m.work.num_partials) * sizeof(float));
      m.part_o_floats = floats;
    }
    m.work_hq = shape.num_heads;
    m.work_hk = shape.num_kv_heads;
  }
  cuda::AttentionArgs args{};
  args.dtype = q.dtype;
  args.head_dim = d;
  args.num_heads = shape.num_heads;
  args.num_kv_heads = shape.num_kv_heads;
  args.block_size = plan.block_size;
  args.scale = shape.scale;
  args.q = q.storage.get();
  args.k_cache = kv.k.storage.get();
  args.v_cache = kv.v.storage.get();
  args.block_tables = static_cast<const int32_t*>(m.block_tables.get());
  args.slots = static_cast<const cuda::QuerySlot*>(m.w_slots.get());
  args.narrow = static_cast<const cuda::AttentionItem*>(m.w_narrow.get());
  args.num_narrow = int32_t(m.work.narrow.size());
  args.wide = static_cast<const cuda::AttentionItem*>(m.w_wide.get());
  args.num_wide = int32_t(m.work.wide.size());
  args.partial_o = static_cast<float*>(m.part_o.get());
  args.partial_lse = static_cast<float*>(m.part_lse.get());
  args.merge_offsets = static_cast<const int32_t*>(m.w_offsets.get());
  args.merge_partials = static_cast<const int32_t*>(m.w_partials.get());
  args.num_outputs = plan.num_rows() * shape.num_heads;
  args.out = out.storage.get();
  cuda::AttentionStreams streams{m.ctx->stream};
  if (m.overlap_attention) {
    streams.side = m.ctx->side;
    streams.fork = m.ctx->fork;
    streams.join = m.ctx->join;
  }
  cuda::launch_attention(args, streams);
}

void CudaBackend::gather_logit_rows(const Tensor& x, const BatchPlan& plan, Tensor& out) {
  cuda::launch_gather_rows(x.dtype, x.storage.get(), static_cast<const int32_t*>(impl_->logit_rows.get()),
                           int64_t(plan.logit_rows.size()), x.cols(), out.storage.get(), impl_->ctx->stream);
}

}  // namespace relayllm
