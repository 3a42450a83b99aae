#include "relayllm/backend/cuda/cublaslt_loader.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

#include "relayllm/common/error.h"

namespace relayllm::cuda {
namespace {

template <typename F>
void bind(void* lib, const char* name, F& fn, const std::string& path) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  RELAYLLM_CHECK(fn != nullptr, "cuda: {} has no symbol {}", path, name);
}

CublasLtApi open_api() {
  CublasLtApi api;
  const char* override_name = std::getenv("RELAYLLM_CUBLASLT");
  const char* candidates[] = {override_name, "libcublasLt.so.13", "libcublasLt.so"};
  for (const char* name : candidates) {
    if (!name) continue;
    api.handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (api.handle) {
      api.path = name;
      break;
    }
  }
  RELAYLLM_CHECK(api.handle != nullptr,
                 "cuda: cannot open libcublasLt.so.13 ({}); put its folder on LD_LIBRARY_PATH "
                 "or name the file in RELAYLLM_CUBLASLT",
                 dlerror());
  bind(api.handle, "cublasLtCreate", api.create, api.path);
  bind(api.handle, "cublasLtDestroy", api.destroy, api.path);
  bind(api.handle, "cublasLtMatmulDescCreate", api.desc_create, api.path);
  bind(api.handle, "cublasLtMatmulDescDestroy", api.desc_destroy, api.path);
  bind(api.handle, "cublasLtMatmulDescSetAttribute", api.desc_set, api.path);
  bind(api.handle, "cublasLtMatrixLayoutCreate", api.layout_create, api.path);
  bind(api.handle, "cublasLtMatrixLayoutDestroy", api.layout_destroy, api.path);
  bind(api.handle, "cublasLtMatmulPreferenceCreate", api.pref_create, api.path);
  bind(api.handle, "cublasLtMatmulPreferenceDestroy", api.pref_destroy, api.path);
  bind(api.handle, "cublasLtMatmulPreferenceSetAttribute", api.pref_set, api.path);
  bind(api.handle, "cublasLtMatmulAlgoGetHeuristic", api.heuristic, api.path);
  bind(api.handle, "cublasLtMatmul", api.matmul, api.path);
  return api;
}

}  // namespace

const CublasLtApi& cublaslt_api() {
  // The library stays open for the process: handles made from it may outlive any one backend.
  static const CublasLtApi api = open_api();
  return api;
}

}  // namespace relayllm::cuda
