// Tensor parallelism's one scheduler: rank 0 runs the engine and, before each forward,
// broadcasts what the forward needs (the BatchPlan and how to run it) to the other
// ranks, which only run the forward on their shard (tp_worker.h). Block tables are the
// same on every rank; only the heads each block holds differ.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "relayllm/backend/batch_plan.h"
#include "relayllm/engine/model_runner.h"

namespace relayllm {

class Communicator;

// What a worker needs before its first step: the KV pool rank 0 sized (device memory
// may differ between ranks, the pool may not) and the rope table's length.
struct TpInit {
  int32_t num_blocks = 0;
  int32_t block_size = 0;
  int64_t max_positions = 0;
};

struct TpMessage {
  enum class Kind : uint8_t { kInit = 1, kStep = 2, kStop = 3 };
  Kind kind = Kind::kStop;
  TpInit init;         // kInit
  BatchPlan plan;      // kStep
  GraphPolicy policy;  // kStep
};

// Bytes on the wire; decode throws Error on a truncated or unknown message.
std::vector<uint8_t> encode_tp_message(const TpMessage& message);
TpMessage decode_tp_message(const std::vector<uint8_t>& bytes);

class TpChannel {
 public:
  explicit TpChannel(std::shared_ptr<Communicator> comm);
  Communicator& comm() { return *comm_; }

  // Rank 0.
  void send(const TpMessage& message);
  // Rank 0: lets the workers' loops end (they return from run_tp_worker). Sent once;
  // later calls do nothing, so both the engine and whoever started the job may call it.
  void stop();
  bool stopped() const { return stopped_; }
  // Other ranks: waits (sleeping, not spinning, while rank 0 is idle) for the next one.
  TpMessage receive();

 private:
  std::shared_ptr<Communicator> comm_;
  std::vector<uint8_t> buffer_;
  bool stopped_ = false;
};

}  // namespace relayllm
