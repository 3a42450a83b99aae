// Joining a tensor-parallel job from the serving layer: load the MPI communicator
// (dist/mpi_loader.h), check the job's size and that every rank runs the same build.
#pragma once

#include <memory>

namespace relayllm {

class Communicator;
struct EngineOptions;

// Reads only the model's architecture (config.json or the GGUF metadata; the default
// model's when none is given) and throws Error with one line when it cannot be sharded
// over options.tensor_parallel_size ranks (heads, KV heads, intermediate size).
void check_tensor_parallel_model(const EngineOptions& options);

// Null for size 1 (nothing is loaded). Otherwise this process must be a rank of an MPI
// job of exactly `size` ranks (the CLI starts one itself, dist/launcher.h); throws Error
// with one line otherwise, or when the ranks run different builds.
std::shared_ptr<Communicator> join_tensor_parallel(int size);

}  // namespace relayllm
