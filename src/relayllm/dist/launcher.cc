#include "relayllm/dist/launcher.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "relayllm/common/error.h"
#include "relayllm/dist/mpi_loader.h"

namespace relayllm {
namespace {

std::string self_executable(const std::string& argv0) {
  std::error_code ec;
  std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? argv0 : exe.string();
}

// mpirun's pid for the signal handler (a plain value handed to one process-wide handler,
// which is all a signal handler can reach).
volatile sig_atomic_t g_child_pid = 0;

void forward_signal(int sig) {
  if (g_child_pid > 0) kill(pid_t(g_child_pid), sig);
}

}  // namespace

std::vector<std::string> mpirun_command(int ranks, const std::vector<std::string>& args) {
  const char* env = std::getenv("RELAYLLM_MPIRUN");
  std::vector<std::string> cmd = {env && *env ? env : "mpirun", "-np", std::to_string(ranks),
                                  // More ranks than cores is allowed (CPU tests on small
                                  // machines); no binding, as the backend places its threads.
                                  "--oversubscribe", "--bind-to", "none"};
  // Open MPI refuses root unless told; a container's CI runs as root.
  if (geteuid() == 0) cmd.push_back("--allow-run-as-root");
  cmd.push_back(self_executable(args.empty() ? "relayllm" : args[0]));
  cmd.insert(cmd.end(), args.begin() + (args.empty() ? 0 : 1), args.end());
  return cmd;
}

std::optional<int> launch_ranks_if_needed(int ranks, const std::vector<std::string>& args) {
  if (ranks <= 1 || launched_by_mpi()) return std::nullopt;
  const std::vector<std::string> cmd = mpirun_command(ranks, args);
  std::vector<char*> argv;
  for (const std::string& a : cmd) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = fork();
  RELAYLLM_CHECK(pid >= 0, "--tensor-parallel-size {}: fork failed: {}", ranks,
                 std::strerror(errno));
  if (pid == 0) {
    execvp(argv[0], argv.data());
    std::cerr << "error: --tensor-parallel-size " << ranks << " starts its ranks with " << argv[0]
              << ", which could not run (" << std::strerror(errno)
              << "); install Open MPI (Debian: apt-get install openmpi-bin) or set "
                 "RELAYLLM_MPIRUN\n";
    _exit(127);
  }
  g_child_pid = pid;
  struct sigaction action = {};
  action.sa_handler = forward_signal;
  sigemptyset(&action.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &action, nullptr);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  g_child_pid = 0;
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (code != 0 && code != 127)
    std::cerr << "error: the tensor-parallel job of " << ranks << " ranks failed (mpirun exit code "
              << code << "); the lines above name the rank that failed\n";
  return code;
}

}  // namespace relayllm
