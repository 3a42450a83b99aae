#include "relayllm/dist/launcher.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "relayllm/common/error.h"
#include "relayllm/dist/mpi_loader.h"

namespace relayllm {
namespace {

std::string self_executable(const std::string& argv0) {
  std::error_code ec;
  std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? argv0 : exe.string();
}

// The signal the launcher got, for its wait loop (a signal handler can only set a flag).
volatile sig_atomic_t g_signal = 0;

void note_signal(int sig) { g_signal = sig; }

// The rank-0 process among mpirun's children: the one whose environment says so. Signals
// go to it alone, so that `serve` drains its requests while the other ranks keep running
// its steps (mpirun itself would end every rank at once).
pid_t find_rank0(pid_t mpirun) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    std::getline(stat, line);
    const size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 1));
    std::string state;
    long ppid = 0;
    rest >> state >> ppid;
    if (ppid != mpirun) continue;
    std::ifstream env_file(entry.path() / "environ", std::ios::binary);
    std::string env((std::istreambuf_iterator<char>(env_file)), std::istreambuf_iterator<char>());
    if (env.find(std::string("OMPI_COMM_WORLD_RANK=0") + '\0') != std::string::npos)
      return pid_t(std::stol(name));
  }
  return -1;
}

}  // namespace

std::vector<std::string> mpirun_command(int ranks, const std::vector<std::string>& args) {
  const char* env = std::getenv("RELAYLLM_MPIRUN");
  std::vector<std::string> cmd = {env && *env ? env : "mpirun", "-np", std::to_string(ranks),
                                  // More ranks than cores is allowed (CPU tests on small
                                  // machines); no binding, as the backend places its threads.
                                  "--oversubscribe", "--bind-to", "none",
                                  // After a rank dies, mpirun sends the others SIGTERM and,
                                  // 1 s later by default, SIGKILL: rank 0 needs longer to
                                  // answer its requests in flight with 503s (serve_command.cc
                                  // gives them up to 4 s), which a loaded host did not get.
                                  "--mca", "odls_base_sigkill_timeout", "6"};
  // Open MPI refuses root unless told; a container's CI runs as root.
  if (geteuid() == 0) cmd.push_back("--allow-run-as-root");
  // mpirun runs in a background process group (launch_ranks_if_needed), where reading a
  // terminal would stop it; stdin that is a file or pipe still reaches rank 0.
  if (isatty(STDIN_FILENO)) {
    cmd.push_back("--stdin");
    cmd.push_back("none");
  }
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
    // A process group of its own: a terminal's Ctrl-C reaches this launcher alone, which
    // hands it to rank 0 (below); mpirun would otherwise end every rank at once.
    setpgid(0, 0);
    execvp(argv[0], argv.data());
    std::cerr << "error: --tensor-parallel-size " << ranks << " starts its ranks with " << argv[0]
              << ", which could not run (" << std::strerror(errno)
              << "); install Open MPI (Debian: apt-get install openmpi-bin) or set "
                 "RELAYLLM_MPIRUN\n";
    _exit(127);
  }
  struct sigaction action = {};
  action.sa_handler = note_signal;  // no SA_RESTART: waitpid returns to look at it
  sigemptyset(&action.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &action, nullptr);
  int status = 0;
  for (;;) {
    if (waitpid(pid, &status, 0) == pid) break;
    if (errno != EINTR) break;
    if (const int sig = g_signal; sig != 0) {
      g_signal = 0;
      const pid_t rank0 = find_rank0(pid);
      kill(rank0 > 0 ? rank0 : pid, sig);
    }
  }
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (code != 0 && code != 127)
    std::cerr << "error: the tensor-parallel job of " << ranks << " ranks failed (mpirun exit code "
              << code << "); the lines above name the rank that failed\n";
  return code;
}

}  // namespace relayllm
