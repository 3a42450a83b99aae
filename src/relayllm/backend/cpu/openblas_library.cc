#include "relayllm/backend/cpu/openblas_library.h"

#include <dlfcn.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <optional>
#include <string>

namespace relayllm::openblas {
namespace {

std::optional<Library> open_library() {
  const char* override_path = std::getenv("RELAYLLM_OPENBLAS");
  const std::string path =
      override_path && *override_path ? override_path : std::string("libopenblas.so.0");
  // RTLD_LOCAL: its symbols stay out of the global namespace (another BLAS may be loaded).
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    spdlog::debug("cpu backend: {} not loaded ({}); prefill runs on the integer kernels", path,
                  ::dlerror());
    return std::nullopt;
  }
  Library lib;
  lib.sgemm = reinterpret_cast<decltype(lib.sgemm)>(::dlsym(handle, "cblas_sgemm"));
  lib.set_num_threads =
      reinterpret_cast<decltype(lib.set_num_threads)>(::dlsym(handle, "openblas_set_num_threads"));
  if (!lib.sgemm || !lib.set_num_threads) {
    spdlog::warn("cpu backend: {} lacks cblas_sgemm or openblas_set_num_threads; not used", path);
    return std::nullopt;  // the handle stays open: unloading a BLAS mid-process is not safe
  }
  // The backend's pool runs one sgemm per thread; OpenBLAS's own threads would compete with
  // it for the same cores.
  lib.set_num_threads(1);
  return lib;
}

}  // namespace

const Library* library() {
  // Loaded once, then read-only: every backend of the process shares it.
  static const std::optional<Library> kLibrary = open_library();
  return kLibrary ? &*kLibrary : nullptr;
}

}  // namespace relayllm::openblas
