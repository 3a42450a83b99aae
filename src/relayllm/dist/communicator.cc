#include "relayllm/dist/communicator.h"

#include <cstdlib>
#include <cstring>

namespace relayllm {

void SingleCommunicator::all_gather(const void* send, size_t bytes, void* recv) {
  if (bytes > 0 && send != recv) std::memcpy(recv, send, bytes);
}

void SingleCommunicator::abort(int exit_code) { std::exit(exit_code); }

}  // namespace relayllm
