// Which process each rank of a tensor-parallel job is, and a watch that notices when one
// on this host exits. A dead rank leaves the others waiting in a collective that never
// completes (MPI has no timeouts), so rank 0 cannot learn of it from the collectives;
// Open MPI's mpirun then ends the job within about a second. The watch lets rank 0 use
// that second: answer 503 to what is in flight and name the rank that died.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace relayllm {

class Communicator;

struct RankProcess {
  int rank = 0;
  std::string host;  // host name, for messages
  // Host name + PID namespace: processes with equal machine keys see each other's PIDs.
  std::string machine;
  int64_t pid = 0;
  uint64_t start_ticks = 0;  // start time (/proc/PID/stat), so a reused PID is not mistaken
};

// This process, as the other ranks see it.
RankProcess this_rank_process(int rank);

// Every rank's process. A collective: every rank calls it at the same point of the job.
std::vector<RankProcess> gather_rank_processes(Communicator& comm);

// Whether `process`, on this machine, has exited (gone, a zombie, or its PID reused).
bool rank_process_exited(const RankProcess& process);

// Watches the other ranks on this machine (ranks on other hosts are left to mpirun, which
// ends the job when any rank dies). Calls `on_exit` once, on the watch's thread, for the
// first rank found gone.
class RankWatch {
 public:
  RankWatch(std::vector<RankProcess> ranks, int self_rank,
            std::function<void(const RankProcess&)> on_exit,
            std::chrono::milliseconds period = std::chrono::milliseconds(100));
  ~RankWatch();
  RankWatch(const RankWatch&) = delete;
  RankWatch& operator=(const RankWatch&) = delete;

  // Looks now, from the calling thread (e.g. on a signal that may be mpirun ending the job).
  std::optional<RankProcess> find_exited() const;
  // The number of ranks watched (those on this machine, other than this one).
  size_t num_watched() const { return watched_.size(); }

 private:
  void loop();

  std::vector<RankProcess> watched_;
  std::function<void(const RankProcess&)> on_exit_;
  std::chrono::milliseconds period_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace relayllm
