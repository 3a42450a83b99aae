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

inline size_t dtype_size(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }
std::string dtype_name(DType dtype);
// Accepts vLLM's spellings: float32/float, bfloat16, float16/half; "auto" is resolved by the
// caller.
DType parse_dtype(const std::string& name);

struct Tensor {
  std::shared_ptr<void> storage;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;

  int64_t numel() const {
    return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
  }
  int64_t dim(size_t i) const { return shape.at(i); }
  int64_t rows() const { return numel() / shape.back(); }  // all but the last dimension
  int64_t cols() const { return shape.back(); }
  size_t bytes() const { return size_t(numel()) * dtype_size(dtype); }
  bool defined() const { return storage != nullptr; }
  template <typename T>
  T* data() const {
    return static_cast<T*>(storage.get());
  }
};

}  // namespace relayllm
