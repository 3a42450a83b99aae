// How `generate` and `serve` run under --tensor-parallel-size N: the same command on
// every rank, rank 0 running it and the others the forward of its steps.
#pragma once

#include <functional>

#include "relayllm/serving/engine_builder.h"

namespace relayllm {

// Size 1: returns run(). Otherwise, outside an MPI job, checks that the model shards
// over N ranks, then starts the job under mpirun (this same command line) and returns
// its exit code; inside one, joins it: rank 0 returns run() with options.communicator
// set, the others run the worker loop. A rank that fails ends the whole job (its error
// names the rank) instead of leaving the others waiting.
int run_tensor_parallel(EngineOptions& options, const std::function<int()>& run);

}  // namespace relayllm
