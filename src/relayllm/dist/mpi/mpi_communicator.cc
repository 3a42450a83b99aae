// The Open MPI communicator, built as librelayllm_mpi.so (the only file linked against
// libmpi). The engine dlopens it only when more than one rank runs, so a one-rank
// binary carried to a machine without Open MPI still starts.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>

#include "relayllm/dist/communicator.h"
#include "relayllm/dist/mpi_plugin_abi.h"

namespace relayllm {
namespace {

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "error " + std::to_string(code);
  return std::string(text, size_t(len));
}

// Collectives return their error instead of aborting (MPI_ERRORS_RETURN), so it
// reaches the user as one line naming the call; the caller then aborts the job.
void check(int code, const char* call) {
  if (code != MPI_SUCCESS)
    throw std::runtime_error(std::string("MPI ") + call + " failed: " + mpi_error_text(code));
}

// MPI counts are int: large buffers go in chunks.
constexpr size_t kMaxCount = size_t(std::numeric_limits<int>::max()) / 2;

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "Comm_rank");
    check(MPI_Comm_size(MPI_COMM_WORLD, &size_), "Comm_size");
    MPI_Comm local;
    check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local),
          "Comm_split_type");
    check(MPI_Comm_rank(local, &local_rank_), "Comm_rank");
    check(MPI_Comm_size(local, &local_size_), "Comm_size");
    MPI_Comm_free(&local);
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(version, &len);
    name_.assign(version, size_t(len));
    if (size_t cut = name_.find(','); cut != std::string::npos) name_.resize(cut);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  std::string name() const override { return name_; }

  void all_reduce_sum(float* data, size_t count) override {
    for (size_t done = 0; done < count; done += kMaxCount) {
      const int n = int(std::min(kMaxCount, count - done));
      check(MPI_Allreduce(MPI_IN_PLACE, data + done, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
            "Allreduce");
    }
  }
  void broadcast(void* data, size_t bytes, int root) override {
    auto* p = static_cast<char*>(data);
    for (size_t done = 0; done < bytes; done += kMaxCount) {
      const int n = int(std::min(kMaxCount, bytes - done));
      check(MPI_Bcast(p + done, n, MPI_BYTE, root, MPI_COMM_WORLD), "Bcast");
    }
  }
  void broadcast_idle(void* data, size_t bytes, int root) override {
    if (bytes > kMaxCount) throw std::runtime_error("MPI Ibcast: message too large");
    MPI_Request request;
    check(MPI_Ibcast(data, int(bytes), MPI_BYTE, root, MPI_COMM_WORLD, &request), "Ibcast");
    // Spin briefly (the next step of a busy engine comes within microseconds), then
    // sleep between polls, up to 1 ms: an idle worker costs no core.
    for (int polls = 0;; ++polls) {
      int done = 0;
      check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "Test");
      if (done) return;
      if (polls > 2000)
        std::this_thread::sleep_for(std::chrono::microseconds(polls > 20000 ? 1000 : 50));
    }
  }
  void all_gather(const void* send, size_t bytes, void* recv) override {
    if (bytes > kMaxCount) throw std::runtime_error("MPI Allgather: message too large");
    check(MPI_Allgather(send, int(bytes), MPI_BYTE, recv, int(bytes), MPI_BYTE, MPI_COMM_WORLD),
          "Allgather");
  }
  void barrier() override { check(MPI_Barrier(MPI_COMM_WORLD), "Barrier"); }
  [[noreturn]] void abort(int exit_code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);  // MPI_Abort does not return; this keeps [[noreturn]] honest
  }

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::string name_;
};

}  // namespace
}  // namespace relayllm

extern "C" __attribute__((visibility("default"))) relayllm::Communicator* relayllm_mpi_create(
    char* error, size_t error_size) {
  auto fail = [&](const std::string& text) -> relayllm::Communicator* {
    std::snprintf(error, error_size, "%s", text.c_str());
    return nullptr;
  };
  try {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = MPI_THREAD_SINGLE;
      int code = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
      if (code != MPI_SUCCESS)
        return fail("MPI_Init_thread failed: " + relayllm::mpi_error_text(code));
      if (provided < MPI_THREAD_SERIALIZED)
        return fail("this MPI library gives thread level " + std::to_string(provided) +
                    ", tensor parallelism needs MPI_THREAD_SERIALIZED");
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    return new relayllm::MpiCommunicator();
  } catch (const std::exception& e) {
    return fail(e.what());
  }
}
