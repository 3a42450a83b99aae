#include "tensor_parallel_command.h"

#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "relayllm/dist/communicator.h"
#include "relayllm/dist/launcher.h"
#include "relayllm/dist/mpi_loader.h"
#include "relayllm/dist/rank_processes.h"
#include "relayllm/engine/tp_channel.h"
#include "relayllm/serving/tensor_parallel_setup.h"

namespace relayllm {
namespace {

// This process's own arguments, as the kernel has them, to start the same command on
// every rank.
std::vector<std::string> own_command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t start = 0; start < all.size();) {
    size_t end = all.find('\0', start);
    if (end == std::string::npos) end = all.size();
    args.push_back(all.substr(start, end - start));
    start = end + 1;
  }
  return args;
}

}  // namespace

int run_tensor_parallel(EngineOptions& options, const std::function<int()>& run) {
  const int size = options.tensor_parallel_size;
  if (size <= 1) return run();
  if (!launched_by_mpi()) {
    check_tensor_parallel_model(options);  // one line now, not one per rank later
    return *launch_ranks_if_needed(size, own_command_line());
  }
  std::shared_ptr<Communicator> comm = join_tensor_parallel(size);
  options.communicator = comm;
  options.rank_processes = gather_rank_processes(*comm);
  const int rank = comm->rank();
  if (rank != 0) {
    try {
      run_tensor_parallel_worker(options);
      return 0;
    } catch (const std::exception& e) {
      std::cerr << "error: rank " << rank << ": " << e.what() << std::endl;
      comm->abort(1);
    }
  }
  options.tensor_parallel = std::make_shared<TpChannel>(comm);
  int code = 1;
  try {
    code = run();
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << std::endl;
    comm->abort(1);  // the other ranks may be inside a step: end them all
  }
  // The engine stops the workers when it goes; without one (a failed load) this does.
  try {
    options.tensor_parallel->stop();
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << std::endl;
    comm->abort(1);
  }
  return code;
}

}  // namespace relayllm
