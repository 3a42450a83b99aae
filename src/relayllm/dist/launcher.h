// `relayllm serve|generate --tensor-parallel-size N` on one host starts its own ranks:
// when not already a rank of an MPI job, it runs itself again under Open MPI's
// `mpirun -np N` (Open MPI does the process start, the wiring and the abort of the whole
// job when a rank dies) and waits for it. Across hosts the user runs mpirun.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace relayllm {

// The mpirun command line that runs `args` (argv of this process, args[0] ignored) as
// `ranks` ranks on this host.
std::vector<std::string> mpirun_command(int ranks, const std::vector<std::string>& args);

// When ranks > 1 and this process is not a rank of an MPI job: runs the job and returns
// its exit code for main to return (after one error line when it failed). SIGINT, SIGTERM
// and SIGHUP go to rank 0 alone, which shuts down as one rank would and then stops the
// others. Otherwise nullopt: go on in this process.
std::optional<int> launch_ranks_if_needed(int ranks, const std::vector<std::string>& args);

}  // namespace relayllm
