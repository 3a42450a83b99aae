// The collectives tensor parallelism needs, behind one small interface: a single-rank
// no-op here, Open MPI in a plugin (mpi/, loaded by mpi_loader.h only when more than one
// rank runs, so a one-rank binary never needs libmpi), NCCL inside the CUDA backend.
// Header-only on purpose: the plugin implements it without linking the engine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace relayllm {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Ranks on this host and this rank's index among them (picks its GPU, splits the cores).
  virtual int local_rank() const { return rank(); }
  virtual int local_size() const { return size(); }
  // What the collectives run on, for logs ("Open MPI v4.1.4").
  virtual std::string name() const = 0;

  // Collectives: every rank calls them in the same order. They throw std::exception
  // (the plugin cannot throw the engine's Error type) with one line naming the call.
  virtual void all_reduce_sum(float* data, size_t count) = 0;
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  // A broadcast that may wait long (a worker waiting for rank 0's next step while the
  // server is idle): waits by polling and sleeping instead of spinning a core. Every rank
  // of one broadcast must use the same kind.
  virtual void broadcast_idle(void* data, size_t bytes, int root) { broadcast(data, bytes, root); }
  // recv holds size() * bytes: rank r's `bytes` land at recv + r * bytes.
  virtual void all_gather(const void* send, size_t bytes, void* recv) = 0;
  virtual void barrier() = 0;
  // Ends every rank of the job (a rank that cannot go on must not leave the others
  // waiting in a collective forever). Does not return.
  [[noreturn]] virtual void abort(int exit_code) = 0;
};

// One rank: every collective is the identity.
class SingleCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "single rank"; }
  void all_reduce_sum(float*, size_t) override {}
  void broadcast(void*, size_t, int) override {}
  void all_gather(const void* send, size_t bytes, void* recv) override;
  void barrier() override {}
  [[noreturn]] void abort(int exit_code) override;
};

}  // namespace relayllm
