#include "relayllm/backend/cuda/step_staging.h"

#include <algorithm>

#include "relayllm/backend/cuda/cuda_check.h"

namespace relayllm::cuda {
namespace {

constexpr size_t kAlign = 256;

size_t round_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

}  // namespace

StepStaging::StepStaging(int num_regions)
    : capacity_(size_t(num_regions), 0),
      used_(size_t(num_regions), 0),
      offsets_(size_t(num_regions), 0) {
  RELAYLLM_CUDA_CHECK(cudaEventCreateWithFlags(&uploaded_, cudaEventDisableTiming));
}

StepStaging::~StepStaging() {
  if (uploaded_) {
    cudaEventSynchronize(uploaded_);
    cudaEventDestroy(uploaded_);
  }
  if (host_) cudaFreeHost(host_);
  if (device_) cudaFree(device_);
}

bool StepStaging::layout(const std::vector<size_t>& bytes, cudaStream_t stream) {
  RELAYLLM_CUDA_CHECK(cudaEventSynchronize(uploaded_));
  bool grow = !device_;
  for (size_t i = 0; i < bytes.size(); ++i) grow |= bytes[i] > capacity_[i];
  used_ = bytes;
  if (!grow) return false;
  // Double what is needed so that a slowly growing batch does not reallocate every step.
  total_ = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    capacity_[i] = std::max(capacity_[i], round_up(2 * bytes[i] + 1));
    offsets_[i] = total_;
    total_ += capacity_[i];
  }
  RELAYLLM_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (host_) RELAYLLM_CUDA_CHECK(cudaFreeHost(host_));
  if (device_) RELAYLLM_CUDA_CHECK(cudaFree(device_));
  host_ = nullptr;
  device_ = nullptr;
  RELAYLLM_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&host_), total_));
  RELAYLLM_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&device_), total_));
  return true;
}

void StepStaging::upload(cudaStream_t stream) {
  // Regions are copied one by one: copying whole capacities would move far more
  // than a small step needs once a large batch has grown them.
  for (size_t i = 0; i < used_.size(); ++i)
    if (used_[i] > 0)
      RELAYLLM_CUDA_CHECK(cudaMemcpyAsync(device_ + offsets_[i], host_ + offsets_[i], used_[i],
                                          cudaMemcpyHostToDevice, stream));
  RELAYLLM_CUDA_CHECK(cudaEventRecord(uploaded_, stream));
}

}  // namespace relayllm::cuda
