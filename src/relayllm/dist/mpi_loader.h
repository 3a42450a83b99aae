// Opens the MPI communicator plugin (librelayllm_mpi.so) at run time. Only a job of
// several ranks calls this, so relayllm with one rank never loads libmpi.
#pragma once

#include <memory>

#include "relayllm/dist/communicator.h"

namespace relayllm {

// Whether this process was started by an MPI launcher (mpirun / a PMIx server):
// then it is one rank of a job and must not launch ranks itself.
bool launched_by_mpi();

// Loads the plugin and initializes MPI. Searched: $RELAYLLM_MPI_PLUGIN (a path), the
// executable's folder, its ../lib, then the library path. Throws Error with one line
// naming what could not be loaded (the plugin or Open MPI's libmpi) and what to do.
std::unique_ptr<Communicator> load_mpi_communicator();

}  // namespace relayllm
