// The rank watch: a process that runs is alive; one that exited, is a zombie, or whose
// PID now names another process (a different start time) is gone; the watch calls back
// once, for ranks on this machine only.
#include "relayllm/dist/rank_processes.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace relayllm {
namespace {

// A child that sleeps until killed, described as a rank on this machine.
struct SleepingChild {
  pid_t pid = -1;
  RankProcess process;

  explicit SleepingChild(int rank) {
    int ready[2];
    EXPECT_EQ(pipe(ready), 0);
    pid = fork();
    if (pid == 0) {
      RankProcess self = this_rank_process(rank);
      ssize_t wrote = write(ready[1], &self.start_ticks, sizeof self.start_ticks);
      (void)wrote;
      for (;;) pause();
    }
    process = this_rank_process(rank);
    process.pid = pid;
    EXPECT_EQ(read(ready[0], &process.start_ticks, sizeof process.start_ticks),
              ssize_t(sizeof process.start_ticks));
    close(ready[0]);
    close(ready[1]);
  }
  void kill_without_reaping() const { kill(pid, SIGKILL); }
  void reap() {
    if (pid > 0) waitpid(pid, nullptr, 0);
    pid = -1;
  }
  ~SleepingChild() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      reap();
    }
  }
};

bool wait_for(const std::function<bool()>& done) {
  for (int i = 0; i < 200 && !done(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return done();
}

TEST(RankProcesses, ThisProcessRunsWithAStartTime) {
  const RankProcess self = this_rank_process(3);
  EXPECT_EQ(self.rank, 3);
  EXPECT_EQ(self.pid, int64_t(getpid()));
  EXPECT_GT(self.start_ticks, 0u);
  EXPECT_FALSE(self.host.empty());
  EXPECT_FALSE(rank_process_exited(self));
}

TEST(RankProcesses, AZombieAndAReapedProcessHaveExited) {
  SleepingChild child(1);
  EXPECT_FALSE(rank_process_exited(child.process));
  child.kill_without_reaping();
  EXPECT_TRUE(wait_for([&] { return rank_process_exited(child.process); }));  // a zombie
  child.reap();
  EXPECT_TRUE(rank_process_exited(child.process));  // gone
}

TEST(RankProcesses, APidNamingAnotherProcessHasExited) {
  RankProcess self = this_rank_process(0);
  self.start_ticks += 1;  // this PID, started at another time: a reused PID
  EXPECT_TRUE(rank_process_exited(self));
}

TEST(RankWatch, CallsBackOnceForTheRankThatDied) {
  SleepingChild one(1), two(2);
  std::atomic<int> calls{0}, dead_rank{-1};
  RankWatch watch(
      {this_rank_process(0), one.process, two.process}, 0,
      [&](const RankProcess& p) {
        dead_rank = p.rank;
        ++calls;
      },
      std::chrono::milliseconds(5));
  EXPECT_EQ(watch.num_watched(), 2u);  // not itself
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(calls.load(), 0);
  EXPECT_FALSE(watch.find_exited().has_value());
  two.kill_without_reaping();
  ASSERT_TRUE(wait_for([&] { return calls.load() > 0; }));
  EXPECT_EQ(dead_rank.load(), 2);
  ASSERT_TRUE(watch.find_exited().has_value());
  EXPECT_EQ(watch.find_exited()->rank, 2);
  one.kill_without_reaping();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(calls.load(), 1);
}

TEST(RankWatch, LeavesRanksOnOtherMachinesToMpirun) {
  RankProcess remote = this_rank_process(1);
  remote.machine = "another-host|pid:[1]";
  remote.pid = 1 << 30;  // no such process here
  std::atomic<int> calls{0};
  RankWatch watch(
      {this_rank_process(0), remote}, 0, [&](const RankProcess&) { ++calls; },
      std::chrono::milliseconds(5));
  EXPECT_EQ(watch.num_watched(), 0u);
  EXPECT_FALSE(watch.find_exited().has_value());
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(calls.load(), 0);
}

}  // namespace
}  // namespace relayllm
