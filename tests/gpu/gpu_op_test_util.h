// Helpers shared by the CUDA op tests: inputs rounded to bf16 (so the CPU reference computes
// on the GPU's numbers), outputs poisoned with NaN before a run (an element a kernel forgets
// fails the check) and tensors read back to the host.
#pragma once

#include <limits>
#include <random>
#include <vector>

#include "../common/relative_error.h"
#include "relayllm/backend/backend.h"
#include "relayllm/common/half.h"

namespace relayllm::testing {

// n normal values of deviation `scale`, each rounded to bf16.
inline std::vector<float> random_bf16(std::mt19937_64& rng, size_t n, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = bf16_to_float(float_to_bf16(dist(rng)));
  return v;
}

// A tensor of `shape` on `be` filled with NaN.
inline Tensor poisoned(Backend& be, std::vector<int64_t> shape, DType dtype = DType::kBF16) {
  Tensor t{nullptr, dtype, shape};
  std::vector<float> nan(size_t(t.numel()), std::numeric_limits<float>::quiet_NaN());
  return be.upload(nan, std::move(shape), dtype);
}

inline std::vector<float> to_host(const Tensor& t, Backend& be) {
  std::vector<float> v(size_t(t.numel()));
  be.download(t, v);
  return v;
}

}  // namespace relayllm::testing
