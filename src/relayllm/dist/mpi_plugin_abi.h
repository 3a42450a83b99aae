// The one symbol librelayllm_mpi.so exports, looked up by mpi_loader.cc with dlsym.
// A C name so that no C++ mangling ties the plugin to a compiler; the object it
// returns is a Communicator built by the same compiler as the engine (one build).
#pragma once

#include <cstddef>

namespace relayllm {
class Communicator;
}

extern "C" {
// Initializes MPI (thread level SERIALIZED: the server's engine thread calls the
// collectives) and returns a Communicator over MPI_COMM_WORLD owned by the caller, or
// nullptr with a one-line reason in `error`.
using RelayllmMpiCreate = relayllm::Communicator* (*)(char* error, size_t error_size);
}

#define RELAYLLM_MPI_CREATE_SYMBOL "relayllm_mpi_create"
#define RELAYLLM_MPI_PLUGIN_NAME "librelayllm_mpi.so"
