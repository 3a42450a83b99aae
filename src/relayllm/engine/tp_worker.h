// The loop every rank but 0 runs under tensor parallelism: it holds its shard of the
// model and its KV heads, receives each step rank 0 planned (tp_channel.h) and runs the
// forward, taking part in its all-reduces. It never schedules or samples.
#pragma once

#include <memory>

#include "relayllm/backend/backend.h"
#include "relayllm/model/model_config.h"
#include "relayllm/model/model_weights.h"

namespace relayllm {

class Communicator;

// `weights` are this rank's slices. Returns when rank 0 sends stop (its Engine is
// destroyed); throws Error when a step fails (the caller aborts the job).
void run_tp_worker(const ModelConfig& config, const ModelWeights& weights,
                   std::unique_ptr<Backend> backend, std::shared_ptr<Communicator> comm);

}  // namespace relayllm
