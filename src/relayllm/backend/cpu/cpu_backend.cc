#include "relayllm/backend/cpu/cpu_backend.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "relayllm/backend/cpu/openblas_library.h"
#include "relayllm/backend/cpu/quant_dequant.h"
#include "relayllm/backend/cpu/quant_dispatch.h"
#include "relayllm/common/error.h"
#include "relayllm/dist/communicator.h"

namespace relayllm {
namespace {

// Rows are independent in every normalisation below; small row counts stay on one thread.
constexpr size_t kRowGrain = 4;

void rmsnorm_row(const float* x, const float* w, float eps, int64_t n, float* out) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += double(x[i]) * x[i];
  float inv = float(1.0 / std::sqrt(sum / double(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * inv * w[i];
}

}  // namespace

CpuBackend::CpuBackend(int num_threads)
    : CpuBackend([num_threads] {
        CpuBackendOptions options;
        options.num_threads = num_threads;
        return options;
      }()) {}

CpuBackend::CpuBackend(const CpuBackendOptions& options)
    : pool_(options.num_threads, options.pin_threads),
      block_weights_(options.block_weights),
      kernels_(&cpu_quant::select_quant_kernels(options.kernels)),
      kv_dtype_(options.kv_dtype) {
  RELAYLLM_CHECK(kv_dtype_ == DType::kF32 || kv_dtype_ == DType::kF16,
                 "cpu backend: KV cache in {} is not supported (float32 or float16)",
                 dtype_name(kv_dtype_));
  // The sgemm prefill path only where OpenBLAS can be opened (it is loaded at run time).
  if (openblas::library()) sgemm_min_rows_ = std::max(options.sgemm_min_rows, 0);
}

double CpuBackend::measure_copy_bandwidth() {
  const size_t bytes = size_t(64) << 20;
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    pool_.parallel_for(
        bytes, [&](size_t b, size_t e) { std::memcpy(dst.data() + b, src.data() + b, e - b); },
        size_t(1) << 20);
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, 2.0 * double(bytes) / s);
  }
  return best;
}

Tensor CpuBackend::upload_blocks(WeightFormat format, std::span<const std::byte> bytes,
                                 std::vector<int64_t> shape) {
  RELAYLLM_CHECK(supports_weight_format(format), "cpu backend: weight format {} is not enabled",
                 weight_format_name(format));
  RELAYLLM_CHECK(shape.size() == 2, "cpu backend: a {} weight must be 2-D, got {} dimensions",
                 weight_format_name(format), shape.size());
  const WeightBlockLayout layout = weight_block_layout(format);
  RELAYLLM_CHECK(shape[1] % layout.block_elements == 0,
                 "cpu backend: {} rows of {} values are not whole blocks of {}",
                 weight_format_name(format), shape[1], layout.block_elements);
  Tensor t;
  t.dtype = DType::kF32;  // what the op produces; the bytes are `format` blocks
  t.format = format;
  t.shape = std::move(shape);
  RELAYLLM_CHECK(bytes.size() == t.bytes(), "cpu backend: {} bytes for a {} weight of {} bytes",
                 bytes.size(), weight_format_name(format), t.bytes());
  // 64-byte alignment: rows start on cache lines when their size allows.
  const size_t size = (std::max<size_t>(bytes.size(), 1) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, size);
  RELAYLLM_CHECK(p != nullptr, "cpu backend: out of memory for {} bytes of weights", size);
  std::memcpy(p, bytes.data(), bytes.size());
  t.storage = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  return t;
}

Tensor CpuBackend::empty(std::vector<int64_t> shape, DType dtype) {
  // float16 only for the KV cache; every op's activations are float32.
  RELAYLLM_CHECK(dtype == DType::kF32 || dtype == DType::kF16,
                 "cpu backend: tensors are float32 (or a float16 KV cache), not {}",
                 dtype_name(dtype));
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  // Uninitialised (new T[n], not value-initialised): a large KV pool's pages become
  // resident only as blocks fill.
  const size_t n = std::max<size_t>(size_t(t.numel()), 1);
  if (dtype == DType::kF16)
    t.storage =
        std::shared_ptr<void>(new uint16_t[n], [](void* p) { delete[] static_cast<uint16_t*>(p); });
  else
    t.storage =
        std::shared_ptr<void>(new float[n], [](void* p) { delete[] static_cast<float*>(p); });
  return t;
}

Tensor CpuBackend::upload(std::span<const float> host, std::vector<int64_t> shape, DType dtype) {
  Tensor t = empty(std::move(shape), dtype);
  RELAYLLM_CHECK(size_t(t.numel()) == host.size(), "cpu backend: upload of {} values into {} slots",
                 host.size(), t.numel());
  std::memcpy(t.data<float>(), host.data(), host.size() * sizeof(float));
  return t;
}

void CpuBackend::download(const Tensor& tensor, std::span<float> host) {
  RELAYLLM_CHECK(size_t(tensor.numel()) == host.size(),
                 "cpu backend: download of {} values into {}", tensor.numel(), host.size());
  std::memcpy(host.data(), tensor.data<float>(), host.size() * sizeof(float));
}

void CpuBackend::embedding(const Tensor& table, const BatchPlan& plan, Tensor& out) {
  int64_t hidden = table.cols(), vocab = table.rows();
  const size_t row_bytes = table.format == WeightFormat::kNone ? 0 : table.bytes() / size_t(vocab);
  for (size_t r = 0; r < plan.token_ids.size(); ++r) {
    int32_t id = plan.token_ids[r];
    RELAYLLM_CHECK(id >= 0 && id < vocab, "token id {} is outside the vocabulary [0, {})", id,
                   vocab);
    if (table.format != WeightFormat::kNone) {
      cpu_quant::dequantize_row(table.format, table.data<std::byte>() + size_t(id) * row_bytes,
                                hidden, out.data<float>() + r * hidden);
      continue;
    }
    std::memcpy(out.data<float>() + r * hidden, table.data<float>() + id * hidden,
                hidden * sizeof(float));
  }
}

void CpuBackend::rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  int64_t n = weight.numel(), rows = x.numel() / n;
  const float* xs = x.data<float>();
  const float* w = weight.data<float>();
  float* o = out.data<float>();
  pool_.parallel_for(
      size_t(rows),
      [&](size_t b, size_t e) {
        for (size_t r = b; r < e; ++r) rmsnorm_row(xs + r * n, w, eps, n, o + r * n);
      },
      kRowGrain);
}

void CpuBackend::add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps,
                             Tensor& out) {
  int64_t n = weight.numel(), rows = x.numel() / n;
  float* res = residual.data<float>();
  const float* xs = x.data<float>();
  const float* w = weight.data<float>();
  float* o = out.data<float>();
  pool_.parallel_for(
      size_t(rows),
      [&](size_t b, size_t e) {
        for (size_t r = b; r < e; ++r) {
          float* rr = res + r * n;
          for (int64_t i = 0; i < n; ++i) rr[i] += xs[r * n + i];
          rmsnorm_row(rr, w, eps, n, o + r * n);
        }
      },
      kRowGrain);
}

void CpuBackend::rope(Tensor& q, Tensor& k, const Tensor& cos_sin, const BatchPlan& plan) {
  int64_t d = cos_sin.cols(), half = d / 2, max_pos = cos_sin.rows();
  int64_t rows = plan.num_rows();
  int64_t hq = q.numel() / (rows * d), hk = k.numel() / (rows * d);
  for (int32_t pos : plan.positions)
    RELAYLLM_CHECK(pos >= 0 && pos < max_pos, "position {} is beyond the rope table ({} positions)",
                   pos, max_pos);
  auto rotate = [&](float* x, const float* cs) {
    for (int64_t i = 0; i < half; ++i) {
      float x1 = x[i], x2 = x[i + half], c = cs[i], s = cs[half + i];
      x[i] = x1 * c - x2 * s;
      x[i + half] = x2 * c + x1 * s;
    }
  };
  pool_.parallel_for(
      size_t(rows),
      [&](size_t b, size_t e) {
        for (size_t r = b; r < e; ++r) {
          const float* cs = cos_sin.data<float>() + int64_t(plan.positions[r]) * d;
          for (int64_t h = 0; h < hq; ++h) rotate(q.data<float>() + (r * hq + h) * d, cs);
          for (int64_t h = 0; h < hk; ++h) rotate(k.data<float>() + (r * hk + h) * d, cs);
        }
      },
      kRowGrain);
}

void CpuBackend::silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  int64_t n = gate.numel();
  const float* g = gate.data<float>();
  const float* u = up.data<float>();
  float* o = out.data<float>();
  pool_.parallel_for(
      size_t(n),
      [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
      },
      4096);
}

void CpuBackend::write_kv(const Tensor& k, const Tensor& v, KvLayer& kv, const BatchPlan& plan) {
  const int64_t row_size = k.numel() / plan.num_rows();  // num_kv_heads * head_dim
  const int64_t pool_slots = kv.k.numel() / row_size;
  const bool half = kv.k.dtype == DType::kF16;
  for (int32_t r = 0; r < plan.num_rows(); ++r) {
    int64_t slot = plan.slot_mapping[r];
    RELAYLLM_CHECK(slot >= 0 && slot < pool_slots, "kv slot {} is outside the pool ({} slots)",
                   slot, pool_slots);
    const float* kr = k.data<float>() + r * row_size;
    const float* vr = v.data<float>() + r * row_size;
    if (half) {
      kernels_->to_f16_row(kr, row_size, kv.k.data<uint16_t>() + slot * row_size);
      kernels_->to_f16_row(vr, row_size, kv.v.data<uint16_t>() + slot * row_size);
      continue;
    }
    std::memcpy(kv.k.data<float>() + slot * row_size, kr, row_size * sizeof(float));
    std::memcpy(kv.v.data<float>() + slot * row_size, vr, row_size * sizeof(float));
  }
}

void CpuBackend::gather_logit_rows(const Tensor& x, const BatchPlan& plan, Tensor& out) {
  int64_t n = x.cols();
  for (size_t i = 0; i < plan.logit_rows.size(); ++i)
    std::memcpy(out.data<float>() + i * n, x.data<float>() + int64_t(plan.logit_rows[i]) * n,
                n * sizeof(float));
}

void CpuBackend::all_reduce_sum(Tensor& x, Communicator& comm) {
  // Activations live in host memory in fp32: the communicator reduces them in place.
  RELAYLLM_CHECK(x.dtype == DType::kF32, "cpu all-reduce: {} tensor", dtype_name(x.dtype));
  comm.all_reduce_sum(x.data<float>(), size_t(x.numel()));
}

}  // namespace relayllm
