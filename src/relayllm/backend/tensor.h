// A typed, shaped view of memory owned by a backend (host memory for the CPU
// backend, device memory for CUDA). Copies share the same storage.
#pragma once

#include <cstdint>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

namespace relayllm {

enum class DType { kF32, kBF16, kF16 };

// How a weight tensor's bytes are laid out when they are not plain `dtype` values: the
// GGUF block formats (kept as they are in the file, rows of whole blocks) and 16-bit
// floats kept as half. kNone: plain `dtype` values. Only backends that say so
// (Backend::supports_weight_format) take these; activations and KV are always kNone.
// kFP8: e4m3 codes with one fp32 scale per output row (backend/fp8_weight.h has the layout).
enum class WeightFormat : uint8_t {
  kNone,
  kF16,
  kBF16,
  kQ8_0,
  kQ4_0,
  kQ4_1,
  kQ4_K,
  kQ5_K,
  kQ6_K,
  kFP8
};

struct WeightBlockLayout {
  int64_t block_elements;  // values per block
  int64_t block_bytes;     // bytes per block
};
// kNone has no block layout (fails); kFP8's layout is one code per value, its per-row scales
// follow the codes (weight_bytes counts them).
WeightBlockLayout weight_block_layout(WeightFormat format);
// Bytes of a [rows, cols] weight in `format` (not kNone), per-row trailers included.
size_t weight_bytes(WeightFormat format, int64_t rows, int64_t cols);
std::string weight_format_name(WeightFormat format);

inline size_t dtype_size(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }
std::string dtype_name(DType dtype);
// Accepts vLLM's spellings: float32/float, bfloat16, float16/half; "auto" is resolved by the
// caller.
DType parse_dtype(const std::string& name);

struct Tensor {
  std::shared_ptr<void> storage;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  WeightFormat format = WeightFormat::kNone;  // kNone: `dtype` values

  int64_t numel() const {
    return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
  }
  int64_t dim(size_t i) const { return shape.at(i); }
  int64_t rows() const { return numel() / shape.back(); }  // all but the last dimension
  int64_t cols() const { return shape.back(); }
  size_t bytes() const {
    if (format == WeightFormat::kNone) return size_t(numel()) * dtype_size(dtype);
    return weight_bytes(format, rows(), cols());
  }
  bool defined() const { return storage != nullptr; }
  template <typename T>
  T* data() const {
    return static_cast<T*>(storage.get());
  }
};

}  // namespace relayllm
