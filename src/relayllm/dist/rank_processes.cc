#include "relayllm/dist/rank_processes.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "relayllm/dist/communicator.h"

namespace relayllm {
namespace {

// Fixed-size record for the all_gather (every rank sends the same number of bytes).
struct RankProcessRecord {
  std::array<char, 256> host{};
  std::array<char, 64> pid_namespace{};
  int64_t pid = 0;
  uint64_t start_ticks = 0;
};

void copy_truncated(const std::string& from, char* to, size_t size) {
  const size_t n = std::min(from.size(), size - 1);
  std::memcpy(to, from.data(), n);
  to[n] = '\0';
}

// State (field 3) and start time (field 22) of /proc/PID/stat; nullopt when the process
// is gone. The command name (field 2) is in parentheses and may hold spaces.
struct ProcStat {
  char state = '?';
  uint64_t start_ticks = 0;
};

std::optional<ProcStat> read_proc_stat(int64_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 1));
  ProcStat stat;
  rest >> stat.state;
  std::string skip;
  for (int field = 4; field < 22; ++field) rest >> skip;  // ppid .. priority, nice, threads ...
  rest >> stat.start_ticks;
  return stat;
}

std::string own_pid_namespace() {
  std::error_code ec;
  const auto link = std::filesystem::read_symlink("/proc/self/ns/pid", ec);
  return ec ? std::string("unknown") : link.string();
}

std::string own_host_name() {
  std::array<char, 256> name{};
  if (gethostname(name.data(), name.size() - 1) != 0) return "unknown-host";
  return name.data();
}

}  // namespace

RankProcess this_rank_process(int rank) {
  RankProcess self;
  self.rank = rank;
  self.host = own_host_name();
  self.machine = self.host + "|" + own_pid_namespace();
  self.pid = int64_t(getpid());
  if (auto stat = read_proc_stat(self.pid)) self.start_ticks = stat->start_ticks;
  return self;
}

std::vector<RankProcess> gather_rank_processes(Communicator& comm) {
  const RankProcess self = this_rank_process(comm.rank());
  RankProcessRecord record;
  copy_truncated(self.host, record.host.data(), record.host.size());
  copy_truncated(own_pid_namespace(), record.pid_namespace.data(), record.pid_namespace.size());
  record.pid = self.pid;
  record.start_ticks = self.start_ticks;
  std::vector<RankProcessRecord> all(size_t(comm.size()));
  comm.all_gather(&record, sizeof record, all.data());
  std::vector<RankProcess> ranks;
  for (size_t r = 0; r < all.size(); ++r) {
    RankProcess p;
    p.rank = int(r);
    p.host = all[r].host.data();
    p.machine = p.host + "|" + all[r].pid_namespace.data();
    p.pid = all[r].pid;
    p.start_ticks = all[r].start_ticks;
    ranks.push_back(std::move(p));
  }
  return ranks;
}

bool rank_process_exited(const RankProcess& process) {
  const std::optional<ProcStat> stat = read_proc_stat(process.pid);
  if (!stat) return true;
  if (stat->state == 'Z' || stat->state == 'X') return true;
  return process.start_ticks != 0 && stat->start_ticks != process.start_ticks;
}

RankWatch::RankWatch(std::vector<RankProcess> ranks, int self_rank,
                     std::function<void(const RankProcess&)> on_exit,
                     std::chrono::milliseconds period)
    : on_exit_(std::move(on_exit)), period_(period) {
  const RankProcess self = this_rank_process(self_rank);
  for (RankProcess& p : ranks)
    if (p.rank != self_rank && p.machine == self.machine) watched_.push_back(std::move(p));
  if (!watched_.empty()) thread_ = std::thread([this] { loop(); });
}

RankWatch::~RankWatch() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::optional<RankProcess> RankWatch::find_exited() const {
  for (const RankProcess& p : watched_)
    if (rank_process_exited(p)) return p;
  return std::nullopt;
}

void RankWatch::loop() {
  std::unique_lock lock(mutex_);
  while (!cv_.wait_for(lock, period_, [this] { return stop_; })) {
    if (std::optional<RankProcess> gone = find_exited()) {
      lock.unlock();
      on_exit_(*gone);
      return;
    }
  }
}

}  // namespace relayllm
