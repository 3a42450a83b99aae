// The per-step arrays a step's kernels read (token ids, positions, slots, block
// tables, the attention work list), kept at fixed device addresses so that a
// captured CUDA graph can replay with the next step's contents. Each array is a
// region of one device buffer with a capacity; the host writes a step's arrays
// into pinned memory and upload() copies the used part of every region.
// Growing any region moves all of them: layout() then reports it, and graphs
// captured before are stale.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <vector>

namespace relayllm::cuda {

class StepStaging {
 public:
  explicit StepStaging(int num_regions);
  ~StepStaging();
  StepStaging(const StepStaging&) = delete;
  StepStaging& operator=(const StepStaging&) = delete;

  // Sets this step's byte size of every region, waiting first until the previous
  // upload has left the pinned buffer. Returns true when the buffers were
  // reallocated (device addresses changed); `stream` is synchronised before the
  // old device buffer is freed.
  bool layout(const std::vector<size_t>& bytes, cudaStream_t stream);
  void* host(int region) const { return host_ + offsets_[size_t(region)]; }
  void* device(int region) const { return device_ + offsets_[size_t(region)]; }
  // Copies the used bytes of every region to the device, in stream order.
  void upload(cudaStream_t stream);

 private:
  std::vector<size_t> capacity_, used_, offsets_;
  unsigned char* host_ = nullptr;
  unsigned char* device_ = nullptr;
  size_t total_ = 0;
  cudaEvent_t uploaded_ = nullptr;
};

}  // namespace relayllm::cuda
