#include "relayllm/dist/build_id.h"

#include <xxhash.h>

#include <fstream>
#include <vector>

#include "relayllm/common/error.h"
#include "relayllm/dist/communicator.h"

namespace relayllm {

uint64_t executable_build_id() {
  std::ifstream in("/proc/self/exe", std::ios::binary);
  if (!in) return 0;
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  std::vector<char> buffer(size_t(1) << 20);
  while (in) {
    in.read(buffer.data(), std::streamsize(buffer.size()));
    XXH3_64bits_update(state, buffer.data(), size_t(in.gcount()));
  }
  const uint64_t id = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return id;
}

void check_same_build(Communicator& comm, uint64_t build_id) {
  std::vector<uint64_t> ids(size_t(comm.size()));
  comm.all_gather(&build_id, sizeof build_id, ids.data());
  for (int r = 1; r < comm.size(); ++r)
    RELAYLLM_CHECK(ids[size_t(r)] == ids[0],
                   "rank {} runs a different relayllm build than rank 0 (executable hash {:016x} "
                   "vs {:016x}): install the same build on every host",
                   r, ids[size_t(r)], ids[0]);
}

}  // namespace relayllm
