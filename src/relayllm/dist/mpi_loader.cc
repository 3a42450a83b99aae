#include "relayllm/dist/mpi_loader.h"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "relayllm/common/error.h"
#include "relayllm/dist/mpi_plugin_abi.h"

namespace relayllm {
namespace {

std::vector<std::string> plugin_candidates() {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("RELAYLLM_MPI_PLUGIN"); env && *env) paths.push_back(env);
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    paths.push_back((exe.parent_path() / RELAYLLM_MPI_PLUGIN_NAME).string());
    paths.push_back((exe.parent_path().parent_path() / "lib" / RELAYLLM_MPI_PLUGIN_NAME).string());
  }
  paths.push_back(RELAYLLM_MPI_PLUGIN_NAME);  // the dynamic loader's own search
  return paths;
}

}  // namespace

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(var)) return true;
  return false;
}

std::unique_ptr<Communicator> load_mpi_communicator() {
  void* handle = nullptr;
  std::string first_error;
  for (const std::string& path : plugin_candidates()) {
    // RTLD_GLOBAL: Open MPI opens its own components with dlopen and they resolve
    // libmpi's symbols from the global scope.
    handle = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (handle) break;
    const char* why = dlerror();
    // A plugin that exists but cannot load (libmpi missing) is the error worth showing.
    if (first_error.empty() ||
        (path.find('/') != std::string::npos && std::filesystem::exists(path)))
      first_error = why ? why : "unknown error";
  }
  if (!handle)
    fail(
        "tensor parallelism needs {} and Open MPI (libmpi.so.40; Debian: apt-get install "
        "openmpi-bin libopenmpi3): {}; run with --tensor-parallel-size 1 without them",
        RELAYLLM_MPI_PLUGIN_NAME, first_error);
  auto create = reinterpret_cast<RelayllmMpiCreate>(dlsym(handle, RELAYLLM_MPI_CREATE_SYMBOL));
  RELAYLLM_CHECK(create, "{} has no symbol {}: it does not belong to this relayllm build",
                 RELAYLLM_MPI_PLUGIN_NAME, RELAYLLM_MPI_CREATE_SYMBOL);
  char error[512] = {0};
  Communicator* comm = create(error, sizeof error);
  RELAYLLM_CHECK(comm, "tensor parallelism: {}", error);
  // The handle stays open for the life of the process: MPI cannot be loaded twice.
  return std::unique_ptr<Communicator>(comm);
}

}  // namespace relayllm
