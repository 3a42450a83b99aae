#include "relayllm/backend/cuda/cuda_check.h"

#include "relayllm/common/error.h"

namespace relayllm::cuda {

void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line) {
  fail("cuda: {} failed: {} ({}:{})", expr, cudaGetErrorString(err), file, line);
}

void throw_message(const char* message) { fail("{}", message); }

}  // namespace relayllm::cuda
