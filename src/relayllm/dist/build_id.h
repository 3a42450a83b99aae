// Ranks of one tensor-parallel job must run the same build: the step messages are raw
// struct bytes and the shards are cut by the same rules. Each rank hashes its own
// executable and the ranks compare at start-up.
#pragma once

#include <cstdint>

namespace relayllm {

class Communicator;

// A hash of the running executable's file (/proc/self/exe), 0 when it cannot be read.
uint64_t executable_build_id();

// Gathers every rank's build id; throws Error on every rank, naming the first rank
// whose build differs from rank 0's, when they are not all the same.
void check_same_build(Communicator& comm, uint64_t build_id);

}  // namespace relayllm
